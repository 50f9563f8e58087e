/* pidfile.h — the config's pid_file: the server's process id, for init
 * scripts and operators (docs/operations.md, "Process lifecycle").
 *
 * Written at start, before anything listens; a pid file that names a live
 * moonpush process means another server runs with this config, and this one
 * refuses to start rather than fight over it. A pid file naming a dead
 * process, or a live process that is not moonpush (a pid reused after a
 * crash or a reboot), is stale and replaced. At exit the file is removed
 * only if it still holds our pid: a newer server's file is left alone.
 */
#ifndef MP_PIDFILE_H
#define MP_PIDFILE_H

/* Writes our pid to path ("" = no pid file). Returns -1 (logged) if a live
 * moonpush owns it or it cannot be written. */
int mp_pidfile_start(const char *path);

/* Removes the pid file written at start, if it still holds our pid. */
void mp_pidfile_stop(void);

#endif
