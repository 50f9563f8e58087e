/* Unit tests for mp_sha1: FIPS 180 vectors, then every length 0..300 against
 * OpenSSL (the padding has edge cases at 55/56 and 63/64 bytes). */
#include <openssl/sha.h>
#include <string.h>

#include "check.h"
#include "server.h"
#include "sha1.h"

mp_server mp;

static void hex(const uint8_t *d, char out[41])
{
    for (int i = 0; i < 20; i++)
        sprintf(out + 2 * i, "%02x", d[i]);
}

static void test_fips_vectors(void)
{
    uint8_t d[20];
    char h[41];
    mp_sha1("abc", 3, d);
    hex(d, h);
    CHECK(strcmp(h, "a9993e364706816aba3e25717850c26c9cd0d89d") == 0);
    mp_sha1("", 0, d);
    hex(d, h);
    CHECK(strcmp(h, "da39a3ee5e6b4b0d3255bfef95601890afd80709") == 0);
    const char *two = "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq";
    mp_sha1(two, strlen(two), d);
    hex(d, h);
    CHECK(strcmp(h, "84983e441c3bd26ebaae4aa1f95129e5e54670f1") == 0);
}

static void test_every_length_matches_openssl(void)
{
    uint8_t buf[300], ours[20], theirs[20];
    for (size_t i = 0; i < sizeof buf; i++)
        buf[i] = (uint8_t)(i * 131 + 7);
    int mismatches = 0;
    for (size_t len = 0; len <= sizeof buf; len++) {
        mp_sha1(buf, len, ours);
        SHA1(buf, len, theirs);
        mismatches += memcmp(ours, theirs, 20) != 0;
    }
    CHECK(mismatches == 0);
}

int main(void)
{
    RUN(test_fips_vectors);
    RUN(test_every_length_matches_openssl);
    return check_report("test_sha");
}
