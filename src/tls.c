/* tls.c — see tls.h. OpenSSL contexts per TLS listener, their reload, and
 * the outcome of SSL calls on non-blocking sockets. */
#include "tls.h"

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

/* TLS 1.2 suites with forward secrecy and AEAD only (TLS 1.3 suites are
 * OpenSSL's defaults, all of them modern). */
#define TLS12_CIPHERS                                                     \
    "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:"          \
    "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:"          \
    "ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305"

typedef struct tls_listener {
    SSL_CTX *ctx;        /* new connections get this one */
    SSL_CTX *pending;    /* built by a reload, not yet in place */
    char cert[512];
    char key[512];
} tls_listener;

static tls_listener listeners[MP_MAX_LISTENERS];

/* An encrypted key would make OpenSSL prompt on the terminal: refuse. */
static int no_password(char *buf, int size, int rwflag, void *u)
{
    (void)buf; (void)size; (void)rwflag; (void)u;
    return 0;
}

const char *mp_tls_reason(void)
{
    static char text[256];
    unsigned long e = ERR_peek_last_error();
    if (e == 0)   /* SSL_ERROR_SYSCALL: the socket said why */
        snprintf(text, sizeof text, "socket: %s", errno ? strerror(errno) : "closed");
    else
        ERR_error_string_n(e, text, sizeof text);
    ERR_clear_error();
    return text;
}

/* One context from the files, or NULL with err saying which file and why. */
static SSL_CTX *build_ctx(int i, const char *cert, const char *key, char *err, size_t errlen)
{
    ERR_clear_error();
    SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
    if (!ctx) {
        snprintf(err, errlen, "listen[%d].tls: cannot create a TLS context: %s", i + 1, mp_tls_reason());
        return NULL;
    }
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    SSL_CTX_set_options(ctx, SSL_OP_CIPHER_SERVER_PREFERENCE | SSL_OP_NO_COMPRESSION |
                                 SSL_OP_NO_RENEGOTIATION | SSL_OP_IGNORE_UNEXPECTED_EOF);
    /* Partial writes: SSL_write returns per record, like write(); moving
     * buffer: a retry regathers the same bytes into the shared scratch;
     * release buffers: an idle connection holds no 34 KB of record buffers. */
    SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER |
                              SSL_MODE_RELEASE_BUFFERS);
    SSL_CTX_set_cipher_list(ctx, TLS12_CIPHERS);
    SSL_CTX_set_default_passwd_cb(ctx, no_password);
    const char *what = NULL, *file = NULL;
    if (SSL_CTX_use_certificate_chain_file(ctx, cert) != 1)
        what = "cannot load the certificate chain", file = cert;
    else if (SSL_CTX_use_PrivateKey_file(ctx, key, SSL_FILETYPE_PEM) != 1)
        what = ERR_GET_REASON(ERR_peek_last_error()) == X509_R_KEY_VALUES_MISMATCH
                   ? "the private key does not match the certificate"
                   : "cannot load the private key",
        file = key;
    else if (SSL_CTX_check_private_key(ctx) != 1)
        what = "the private key does not match the certificate", file = key;
    if (what) {
        snprintf(err, errlen, "listen[%d].tls: %s %s: %s", i + 1, what, file, mp_tls_reason());
        SSL_CTX_free(ctx);
        return NULL;
    }
    return ctx;
}

int mp_tls_load(const mp_config *cfg, char *err, size_t errlen)
{
    for (int i = 0; i < cfg->nlisteners && i < MP_MAX_LISTENERS; i++) {
        const mp_listener_config *l = &cfg->listeners[i];
        if (!l->cert[0])
            continue;
        SSL_CTX *ctx = build_ctx(i, l->cert, l->key, err, errlen);
        if (!ctx) {
            mp_tls_free_all();
            return -1;
        }
        listeners[i].ctx = ctx;
        snprintf(listeners[i].cert, sizeof listeners[i].cert, "%s", l->cert);
        snprintf(listeners[i].key, sizeof listeners[i].key, "%s", l->key);
    }
    return 0;
}

int mp_tls_enabled(int i)
{
    return i >= 0 && i < MP_MAX_LISTENERS && listeners[i].ctx != NULL;
}

SSL *mp_tls_new(int i, int fd)
{
    SSL *ssl = SSL_new(listeners[i].ctx);   /* holds a reference to the context */
    if (ssl && SSL_set_fd(ssl, fd) != 1) {
        SSL_free(ssl);
        ssl = NULL;
    }
    if (!ssl)
        ERR_clear_error();
    return ssl;
}

void mp_tls_reload_abort(void)
{
    for (int i = 0; i < MP_MAX_LISTENERS; i++) {
        SSL_CTX_free(listeners[i].pending);
        listeners[i].pending = NULL;
    }
}

int mp_tls_reload_prepare(char *err, size_t errlen)
{
    mp_tls_reload_abort();
    for (int i = 0; i < MP_MAX_LISTENERS; i++) {
        if (!listeners[i].ctx)
            continue;
        listeners[i].pending = build_ctx(i, listeners[i].cert, listeners[i].key, err, errlen);
        if (!listeners[i].pending) {
            mp_tls_reload_abort();
            return -1;
        }
    }
    return 0;
}

/* Open connections keep the old context alive through their own reference. */
void mp_tls_reload_commit(void)
{
    for (int i = 0; i < MP_MAX_LISTENERS; i++) {
        if (!listeners[i].pending)
            continue;
        SSL_CTX_free(listeners[i].ctx);
        listeners[i].ctx = listeners[i].pending;
        listeners[i].pending = NULL;
    }
}

/* Sorts a failed call's outcome (OpenSSL: the error queue must be clear
 * before the call for SSL_get_error to be right). */
static int outcome(SSL *ssl, int rc)
{
    switch (SSL_get_error(ssl, rc)) {
    case SSL_ERROR_WANT_READ:
        return MP_TLS_WANT_READ;
    case SSL_ERROR_WANT_WRITE:
        return MP_TLS_WANT_WRITE;
    case SSL_ERROR_ZERO_RETURN:
        return MP_TLS_CLOSED;
    default:
        return MP_TLS_ERROR;
    }
}

int mp_tls_handshake(SSL *ssl)
{
    ERR_clear_error();
    int rc = SSL_accept(ssl);
    return rc == 1 ? 1 : outcome(ssl, rc);
}

int mp_tls_read(SSL *ssl, void *buf, int len)
{
    ERR_clear_error();
    int rc = SSL_read(ssl, buf, len);
    return rc > 0 ? rc : outcome(ssl, rc);
}

int mp_tls_write(SSL *ssl, const void *buf, int len)
{
    ERR_clear_error();
    int rc = SSL_write(ssl, buf, len);
    return rc > 0 ? rc : outcome(ssl, rc);
}

/* Kept as the SSL's app data: no field in every connection for it. */
void mp_tls_set_committed(SSL *ssl, size_t n)
{
    SSL_set_app_data(ssl, (void *)(uintptr_t)n);
}

size_t mp_tls_committed(const SSL *ssl)
{
    return (size_t)(uintptr_t)SSL_get_app_data(ssl);
}

void mp_tls_shutdown(SSL *ssl)
{
    ERR_clear_error();
    if (SSL_is_init_finished(ssl))
        SSL_shutdown(ssl);   /* one try: WANT_WRITE here means the peer is not reading anyway */
    ERR_clear_error();
}

void mp_tls_free(SSL *ssl)
{
    SSL_free(ssl);
}

void mp_tls_free_all(void)
{
    mp_tls_reload_abort();
    for (int i = 0; i < MP_MAX_LISTENERS; i++) {
        SSL_CTX_free(listeners[i].ctx);
        listeners[i].ctx = NULL;
    }
}
