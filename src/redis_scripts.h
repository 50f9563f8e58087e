/* redis_scripts.h — the Lua scripts Redis runs for moonpush, as C strings.
 *
 * The sources are the files under redis/ (read them there: one file per
 * script, a comment on top of each); the Makefile embeds each file at
 * build time as a NUL-terminated array named after it (build/redis_scripts.c),
 * so the binary needs no files at run time and a script is edited as Lua,
 * not as an escaped C string. lib.lua is the shared prelude of the channel
 * scripts (store_redis.c sends it in front of each one).
 */
#ifndef MP_REDIS_SCRIPTS_H
#define MP_REDIS_SCRIPTS_H

extern const char mp_redis_lua_lib[];
extern const char mp_redis_lua_publish[];
extern const char mp_redis_lua_read[];
extern const char mp_redis_lua_position[];
extern const char mp_redis_lua_flush[];
extern const char mp_redis_lua_cursor_get[];
extern const char mp_redis_lua_cursor_advance[];
extern const char mp_redis_lua_cursor_delete[];
extern const char mp_redis_lua_generation[];

#endif
