/* pidfile.h — the `pid_file` option: the server's pid in a file, for
 * supervisors and scripts that signal it (kill -HUP $(cat FILE)); see
 * docs/operations.md, "Process lifecycle".
 *
 * Checked first at start: a pid file that names a live moonpush process
 * means another server runs with this config, and this one refuses to start
 * rather than fight over it. A pid file naming a dead process, or a live
 * process that is not moonpush (a pid reused after a crash or a reboot), is
 * stale and replaced. Written once the server listens (so a pid file means
 * "up"), replaced atomically. Removed at exit only if it still holds our
 * pid: a newer server's file is left alone. The path is fixed at start: a
 * reloaded config that names another one takes effect at the next start.
 */
#ifndef MP_PIDFILE_H
#define MP_PIDFILE_H

/* -1 (logged) if the pid file at path names a live moonpush; 0 otherwise
 * (and for "" = no pid file). */
int mp_pidfile_check(const char *path);

/* Writes getpid() to path ("" = no pid file). 0, or -1 with errno set. */
int mp_pidfile_write(const char *path);

/* Removes the file mp_pidfile_write wrote, if it still holds our pid. */
void mp_pidfile_remove(void);

#endif
