/* tls.h — TLS for the listeners that have `tls = { cert, key }` (OpenSSL).
 *
 * One SSL_CTX per TLS listener, built from the certificate chain and key
 * files with modern defaults: TLS 1.2 and later, the server's cipher order,
 * no compression, no renegotiation, session tickets on. A reload (SIGHUP,
 * admin reload()) builds every context anew from the same files before it
 * swaps any: one bad file keeps all the old ones. A connection holds a
 * reference to the context it was accepted with (OpenSSL counts them), so a
 * swap never touches open connections; new ones get the new certificate.
 *
 * The I/O helpers wrap SSL_accept/read/write on a non-blocking socket and
 * sort the outcome into what net.c acts on: bytes, "wait until readable",
 * "wait until writable", the peer closed, or an error.
 */
#ifndef MP_TLS_H
#define MP_TLS_H

#include <stddef.h>

#include "server.h"

typedef struct ssl_st SSL;

enum {
    MP_TLS_WANT_READ = -1,
    MP_TLS_WANT_WRITE = -2,
    MP_TLS_CLOSED = -3,      /* close_notify or EOF */
    MP_TLS_ERROR = -4,       /* protocol or socket error: abort */
};

/* Loads a context for every TLS listener of cfg. Returns -1 with err naming
 * the listener, the file and OpenSSL's reason; nothing is kept then. */
int mp_tls_load(const mp_config *cfg, char *err, size_t errlen);

/* Whether listener i (index into cfg.listeners) speaks TLS. */
int mp_tls_enabled(int i);

/* A new server-side SSL on fd for listener i, or NULL (out of memory). */
SSL *mp_tls_new(int i, int fd);

/* Reload: reread every TLS listener's files into new contexts. Returns -1
 * with err if one fails (the pending ones are dropped, the old stay). */
int mp_tls_reload_prepare(char *err, size_t errlen);
/* Puts the prepared contexts in place (a no-op after a failed prepare). */
void mp_tls_reload_commit(void);
/* Drops the prepared contexts (the config reload was refused). */
void mp_tls_reload_abort(void);

/* 1 once the handshake is done, else MP_TLS_WANT_* or an error. */
int mp_tls_handshake(SSL *ssl);
/* Bytes read (> 0) or MP_TLS_*. */
int mp_tls_read(SSL *ssl, void *buf, int len);
/* Bytes written (> 0) or MP_TLS_*. After MP_TLS_WANT_WRITE call again with
 * at least the same bytes (the buffer may move, it may have grown). */
int mp_tls_write(SSL *ssl, const void *buf, int len);
/* Plaintext bytes handed to a record that still waits for the socket
 * (after MP_TLS_WANT_WRITE), 0 once it is out. The caller keeps them queued. */
void mp_tls_set_committed(SSL *ssl, size_t n);
size_t mp_tls_committed(const SSL *ssl);

/* Sends close_notify if the socket takes it now; never waits. */
void mp_tls_shutdown(SSL *ssl);
void mp_tls_free(SSL *ssl);

/* The reason of the last failure, for a log line (clears OpenSSL's queue). */
const char *mp_tls_reason(void);

/* Frees every context (exit path, --check-config). */
void mp_tls_free_all(void);

#endif
