/* admin_client.h — `moonpush admin`: the administrator's end of the admin
 * socket (the server's end is admin.c).
 *
 * Talks the line protocol of docs/operations.md "Admin wire protocol": one
 * JSON object per line each way, at most 1 MiB a line. Three ways to use it:
 *
 *   moonpush admin [SOCKET] -e EXPR ...   evaluate, print, exit
 *   moonpush admin [SOCKET] < script.lua  every chunk of a script, in order
 *   moonpush admin [SOCKET]               interactive (stdin is a terminal):
 *                                         libedit line editing, history in
 *                                         ~/.moonpush_history, tab completion
 *
 * SOCKET defaults to $MOONPUSH_ADMIN_SOCKET, then ./moonpush-admin.sock.
 * `--tcp HOST:PORT --token T` connects over TCP instead (the token may also
 * come from $MOONPUSH_ADMIN_TOKEN, which keeps it out of `ps`).
 */
#ifndef MP_ADMIN_CLIENT_H
#define MP_ADMIN_CLIENT_H

/* mp_admin_client_main — run the `admin` subcommand.
 *
 * argv[0] is "admin", the rest are its arguments. Output goes to stdout,
 * errors ("error: ...") to stderr.
 *
 * Returns the process exit status: 0 when every chunk evaluated without
 * error, 1 when one raised an error (all chunks still run), 2 on a usage
 * error or when the server cannot be reached, refuses the token, or closes
 * the connection; 130 when Ctrl-C twice gave up waiting for an answer.
 */
int mp_admin_client_main(int argc, char **argv);

#endif
