/* lua_api.c — the C helpers plugins get as `moonpush.host` (wrapped by
 * lua/moonpush.lua): digests, HMAC, base64, constant-time compare, time,
 * logging and token buckets.
 *
 * Everything here is pure (no hub, no loop), so the same file also builds as
 * a loadable Lua module, build/moonpush/host.so, for plugin unit specs that
 * run without a server. Server-only helpers (publish, online, channel_info)
 * are added to the table by lua_host_helpers.c.
 */
#include <lauxlib.h>
#include <lua.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/sha.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/time.h>

#include "limiter.h"
#include "log.h"

int luaopen_moonpush_host(lua_State *L);

static double now_seconds(void)
{
    struct timeval tv;
    gettimeofday(&tv, NULL);
    return (double)tv.tv_sec + (double)tv.tv_usec / 1e6;
}

static int l_now(lua_State *L)
{
    lua_pushnumber(L, now_seconds() * 1000.0);
    return 1;
}

/* moonpush.host.log(level, text): the Lua wrapper joins the arguments. */
static int l_log(lua_State *L)
{
    static const char *names[] = {"debug", "info", "warn", "error", NULL};
    int level = luaL_checkoption(L, 1, "info", names);
    const char *text = luaL_checkstring(L, 2);
    if (level >= mp_log_level)
        mp_log(level, "plugin", "text=\"%s\"", mp_log_q(text));
    return 0;
}

static int push_digest(lua_State *L, const EVP_MD *md)
{
    size_t len;
    const char *s = luaL_checklstring(L, 1, &len);
    unsigned char out[EVP_MAX_MD_SIZE];
    unsigned int outlen = 0;
    if (!EVP_Digest(s, len, out, &outlen, md, NULL))
        return luaL_error(L, "digest failed");
    lua_pushlstring(L, (const char *)out, outlen);
    return 1;
}

static int l_sha1(lua_State *L) { return push_digest(L, EVP_sha1()); }
static int l_sha256(lua_State *L) { return push_digest(L, EVP_sha256()); }

static int l_hmac_sha256(lua_State *L)
{
    size_t klen, dlen;
    const char *key = luaL_checklstring(L, 1, &klen);
    const char *data = luaL_checklstring(L, 2, &dlen);
    unsigned char out[EVP_MAX_MD_SIZE];
    unsigned int outlen = 0;
    if (!HMAC(EVP_sha256(), key, (int)klen, (const unsigned char *)data, dlen, out, &outlen))
        return luaL_error(L, "hmac failed");
    lua_pushlstring(L, (const char *)out, outlen);
    return 1;
}

static int l_constant_time_eq(lua_State *L)
{
    size_t alen, blen;
    const char *a = luaL_checklstring(L, 1, &alen);
    const char *b = luaL_checklstring(L, 2, &blen);
    /* The length is not secret; the contents are. */
    lua_pushboolean(L, alen == blen && CRYPTO_memcmp(a, b, alen) == 0);
    return 1;
}

static int base64_encode(lua_State *L, int url)
{
    size_t len;
    const char *s = luaL_checklstring(L, 1, &len);
    size_t cap = 4 * ((len + 2) / 3) + 1;
    unsigned char *out = malloc(cap);
    if (!out)
        return luaL_error(L, "out of memory");
    int n = EVP_EncodeBlock(out, (const unsigned char *)s, (int)len);
    if (url) {
        while (n > 0 && out[n - 1] == '=')
            n--;
        for (int i = 0; i < n; i++)
            out[i] = out[i] == '+' ? '-' : out[i] == '/' ? '_' : out[i];
    }
    lua_pushlstring(L, (const char *)out, (size_t)n);
    free(out);
    return 1;
}

/* Returns nil for anything that is not canonical base64 of its alphabet. */
static int base64_decode(lua_State *L, int url)
{
    size_t len;
    const char *s = luaL_checklstring(L, 1, &len);
    if (url ? len % 4 == 1 : len % 4 != 0) {
        lua_pushnil(L);
        return 1;
    }
    size_t padded = (len + 3) / 4 * 4;
    unsigned char *in = malloc(padded + 1), *out = malloc(padded / 4 * 3 + 1);
    if (!in || !out) {
        free(in);
        free(out);
        return luaL_error(L, "out of memory");
    }
    int pad = 0, ok = 1;
    for (size_t i = 0; i < len; i++) {
        unsigned char ch = (unsigned char)s[i];
        if (url && (ch == '+' || ch == '/' || ch == '='))
            ok = 0;
        if (!url && (ch == '-' || ch == '_'))
            ok = 0;
        in[i] = url ? (ch == '-' ? '+' : ch == '_' ? '/' : ch) : ch;
        if (!url && ch == '=' && i + 2 < len)
            ok = 0;   /* padding only at the end */
    }
    for (size_t i = len; i < padded; i++)
        in[i] = '=';
    for (size_t i = padded; i > 0 && in[i - 1] == '='; i--)
        pad++;
    int n = ok && padded ? EVP_DecodeBlock(out, in, (int)padded) : (ok ? 0 : -1);
    if (n < 0 || pad > 2) {
        lua_pushnil(L);
    } else {
        lua_pushlstring(L, (const char *)out, (size_t)(n - pad));
    }
    free(in);
    free(out);
    return 1;
}

static int l_b64enc(lua_State *L) { return base64_encode(L, 0); }
static int l_b64dec(lua_State *L) { return base64_decode(L, 0); }
static int l_b64urlenc(lua_State *L) { return base64_encode(L, 1); }
static int l_b64urldec(lua_State *L) { return base64_decode(L, 1); }

/* limit(key, rate, burst) -> true | false, retry_after_seconds */
static int l_limit(lua_State *L)
{
    size_t klen;
    const char *key = luaL_checklstring(L, 1, &klen);
    double rate = luaL_checknumber(L, 2);
    double burst = luaL_checknumber(L, 3);
    double retry = 0;
    int r = mp_limiter_take(key, klen, rate, burst, now_seconds(), &retry);
    if (r < 0)
        return luaL_error(L, "bad argument to limit: key 1-%d bytes, rate > 0, burst >= 1", MP_LIMITER_MAX_KEY_LEN);
    lua_pushboolean(L, r);
    if (r)
        return 1;
    lua_pushnumber(L, retry);
    return 2;
}

/* file_stamp(path) -> { mtime_sec, mtime_nsec, size, inode }, or nil if it
 * cannot be stat'ed. The core takes it just before reading a plugin file, so
 * the file watch, which starts later, compares against what was loaded
 * rather than against the file as it is by then (lua_host_watch.c). */
static int l_file_stamp(lua_State *L)
{
    struct stat st;
    if (stat(luaL_checkstring(L, 1), &st) != 0)
        return 0;
    const lua_Number parts[] = {(lua_Number)st.st_mtim.tv_sec, (lua_Number)st.st_mtim.tv_nsec,
                                (lua_Number)st.st_size, (lua_Number)st.st_ino};
    lua_createtable(L, 4, 0);
    for (int i = 0; i < 4; i++) {
        lua_pushnumber(L, parts[i]);
        lua_rawseti(L, -2, i + 1);
    }
    return 1;
}

int luaopen_moonpush_host(lua_State *L)
{
    static const luaL_Reg fns[] = {
        {"now", l_now},
        {"log", l_log},
        {"sha1", l_sha1},
        {"sha256", l_sha256},
        {"hmac_sha256", l_hmac_sha256},
        {"constant_time_eq", l_constant_time_eq},
        {"base64_encode", l_b64enc},
        {"base64_decode", l_b64dec},
        {"base64url_encode", l_b64urlenc},
        {"base64url_decode", l_b64urldec},
        {"limit", l_limit},
        {"file_stamp", l_file_stamp},
        {NULL, NULL},
    };
    lua_newtable(L);
    luaL_register(L, NULL, fns);
    return 1;
}
