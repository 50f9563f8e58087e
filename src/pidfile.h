/* pidfile.h — the `pid_file` option: the server's pid in a file, for
 * supervisors and scripts that signal it (kill -HUP $(cat FILE)).
 *
 * Written once the server listens (so a pid file means "up"), replaced
 * atomically, removed at a clean exit. The path is fixed at start: a
 * reloaded config that names another one takes effect at the next start.
 */
#ifndef MP_PIDFILE_H
#define MP_PIDFILE_H

/* Writes getpid() to path ("" = no pid file). 0, or -1 with errno set. */
int mp_pidfile_write(const char *path);

/* Removes the file mp_pidfile_write wrote, if any. */
void mp_pidfile_remove(void);

#endif
