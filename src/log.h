/* log.h — one-line logfmt logs on stderr.
 *
 * Each line: `ts=<unix ms> level=<lvl> msg="..." key=value ...`. Callers pass
 * the key=value tail already formatted; tokens and message bodies never
 * belong in it.
 */
#ifndef MP_LOG_H
#define MP_LOG_H

enum { MP_LOG_DEBUG, MP_LOG_INFO, MP_LOG_WARN, MP_LOG_ERROR };

extern int mp_log_level;

void mp_log(int level, const char *msg, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#define mp_debug(...) do { if (mp_log_level <= MP_LOG_DEBUG) mp_log(MP_LOG_DEBUG, __VA_ARGS__); } while (0)
#define mp_info(...)  mp_log(MP_LOG_INFO, __VA_ARGS__)
#define mp_warn(...)  mp_log(MP_LOG_WARN, __VA_ARGS__)
#define mp_error(...) mp_log(MP_LOG_ERROR, __VA_ARGS__)

#endif
