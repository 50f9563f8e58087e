/* sha1.h — SHA-1 (FIPS 180-4), only for the WebSocket accept key.
 *
 * Not for anything that needs a secure hash: RFC 6455 uses SHA-1 merely to
 * prove the server read the handshake. It lives here instead of calling
 * OpenSSL's SHA1() because OpenSSL 3 initialises its provider machinery on
 * the first digest, which faults about 2 MB of libcrypto into every server
 * process (measured: bench/README.md, "Memory per connection").
 */
#ifndef MP_SHA1_H
#define MP_SHA1_H

#include <stddef.h>
#include <stdint.h>

#define MP_SHA1_DIGEST 20

void mp_sha1(const void *data, size_t len, uint8_t out[MP_SHA1_DIGEST]);

#endif
