/* redis_shard.c — which shard: addresses and the hash of a name.
 *
 * A shard's address is parsed and a host name resolved once, at
 * mp_redis_new (resolving on the loop would block it). A name goes to a
 * shard by the jump consistent hash of its FNV-1a hash (redis.h: never
 * change it, every node of a cluster must agree).
 */
#include <netdb.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "redis_int.h"

/* ---- addresses -------------------------------------------------------------- */

/* "unix:/path", "host:port" or "[v6]:port"; a host name is resolved here. */
int redis_parse_addr(shard *sh, const char *addr, char *err, size_t errlen)
{
    if (strlen(addr) >= sizeof sh->addr) {
        set_err(err, errlen, "redis address '%.60s...': too long%s", addr, "");
        return -1;
    }
    strcpy(sh->addr, addr);
    if (strncmp(addr, "unix:", 5) == 0) {
        if (!addr[5] || strlen(addr + 5) >= sizeof sh->path) {
            set_err(err, errlen, "redis address '%s': %s", addr, "bad unix socket path");
            return -1;
        }
        sh->is_unix = 1;
        strcpy(sh->path, addr + 5);
        return 0;
    }
    char host[MP_REDIS_ADDR_MAX];
    const char *colon = strrchr(addr, ':');
    const char *h = addr;
    size_t hlen = colon ? (size_t)(colon - addr) : 0;
    if (addr[0] == '[') {
        const char *close = strchr(addr, ']');
        if (!close || close + 1 != colon) {
            set_err(err, errlen, "redis address '%s': %s", addr, "expected [ipv6]:port");
            return -1;
        }
        h = addr + 1;
        hlen = (size_t)(close - h);
    }
    char *end;
    long port = colon ? strtol(colon + 1, &end, 10) : 0;
    if (!colon || hlen == 0 || !colon[1] || *end || port < 1 || port > 65535) {
        set_err(err, errlen, "redis address '%s': %s", addr, "expected host:port or unix:/path");
        return -1;
    }
    memcpy(host, h, hlen);
    host[hlen] = '\0';
    sh->port = (int)port;
    struct addrinfo hints = { .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM }, *res = NULL;
    int rc = getaddrinfo(host, NULL, &hints, &res);
    if (rc != 0 || !res) {
        set_err(err, errlen, "redis address '%s': %s", addr, rc ? gai_strerror(rc) : "no address");
        return -1;
    }
    const void *a = res->ai_family == AF_INET6 ? (const void *)&((struct sockaddr_in6 *)res->ai_addr)->sin6_addr
                                               : (const void *)&((struct sockaddr_in *)res->ai_addr)->sin_addr;
    inet_ntop(res->ai_family, a, sh->host, sizeof sh->host);
    freeaddrinfo(res);
    return 0;
}

/* ---- hashing ------------------------------------------------------------------ */

static uint64_t fnv1a64(const char *s, size_t len)
{
    uint64_t h = 0xcbf29ce484222325ull;
    for (size_t i = 0; i < len; i++) {
        h ^= (unsigned char)s[i];
        h *= 0x100000001b3ull;
    }
    return h;
}

/* Lamping & Veach, "A Fast, Minimal Memory, Consistent Hash Algorithm". */
static int jump_hash(uint64_t key, int buckets)
{
    int64_t b = -1, j = 0;
    while (j < buckets) {
        b = j;
        key = key * 2862933555777941757ull + 1;
        j = (int64_t)((double)(b + 1) * ((double)(1ll << 31) / (double)((key >> 33) + 1)));
    }
    return (int)b;
}

int mp_redis_shard_of(const mp_redis *r, const char *name, size_t len)
{
    return r->nshards == 1 ? 0 : jump_hash(fnv1a64(name, len), r->nshards);
}
