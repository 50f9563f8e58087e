/* log.h — one-line structured logs.
 *
 * Each line: `ts=<unix ms> level=<lvl> msg="..." key=value ...` (logfmt), or
 * the same keys as one JSON object per line. Callers pass the key=value tail
 * already formatted (values with spaces in double quotes); tokens and message
 * bodies never belong in it. Lines go to stderr, or to the configured file,
 * which mp_log_reopen() reopens (SIGUSR1, after logrotate).
 */
#ifndef MP_LOG_H
#define MP_LOG_H

enum { MP_LOG_DEBUG, MP_LOG_INFO, MP_LOG_WARN, MP_LOG_ERROR };

extern int mp_log_level;

void mp_log(int level, const char *msg, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* s escaped for a quoted logfmt value (\" \\ \n \t; other control bytes
 * become spaces), in one of a few rotating static buffers: valid until a few
 * more calls, enough for the arguments of one log line. Long text is cut. */
const char *mp_log_q(const char *s);

/* json: 1 for JSON lines. path: NULL or "" for stderr. Returns -1 (and keeps
 * the current destination) if the file cannot be opened. */
int mp_log_configure(int json, const char *path);

/* Reopens the log file at the same path (no-op on stderr). */
int mp_log_reopen(void);

#define mp_debug(...) do { if (mp_log_level <= MP_LOG_DEBUG) mp_log(MP_LOG_DEBUG, __VA_ARGS__); } while (0)
#define mp_info(...)  mp_log(MP_LOG_INFO, __VA_ARGS__)
#define mp_warn(...)  mp_log(MP_LOG_WARN, __VA_ARGS__)
#define mp_error(...) mp_log(MP_LOG_ERROR, __VA_ARGS__)

#endif
