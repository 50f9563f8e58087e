/* admin.h — the administrators' door: a Unix socket (mode 0600) and, if
 * configured, a token-guarded TCP listener on loopback. Each line an admin
 * sends is a JSON request (docs/operations.md, "Admin wire protocol"); eval
 * and completion run in the server's Lua state through lua_host_admin.c, under the
 * plugin instruction budget. Admin connections are few and are not counted
 * against max_connections; their buffers are bounded (1 MiB a line).
 */
#ifndef MP_ADMIN_H
#define MP_ADMIN_H

/* Opens the configured admin listeners. Returns -1 (logged) if one cannot,
 * and when a live server answers on the admin socket's path: a second
 * server with the same config must not take the first one's admin away (a
 * stale socket, nobody listening, is replaced). */
int mp_admin_start(void);

/* Closes the listeners, every admin connection, and removes the socket file
 * if it is still the one this server created (same inode). */
void mp_admin_stop(void);

#endif
