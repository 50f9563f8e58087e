/* lua_host_watch.c — plugin file watching: each plugin file the config
 * names is watched (ev_stat, plus a once-a-second nanosecond check) and
 * reloaded alone when it changed and settled (core.reload_file); a file that
 * fails to load leaves the old version serving.
 */
#include "lua_host_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "log.h"

/* A plugin file under watch. Editors write in steps (truncate, write,
 * rename), each an event: a reload waits until the file has been quiet for
 * RELOAD_SETTLE seconds so it never compiles a half-written file. */
#define RELOAD_SETTLE 0.2

typedef struct watched {
    ev_stat w;
    ev_timer settle;
    struct timespec mtime;      /* as last seen, to the nanosecond */
    off_t size;
    ino_t ino;
    struct watched *next;
    char path[];
} watched;

static watched *watches;
/* ev_stat compares mtime in whole seconds: a same-size edit within the
 * second it loaded would go unseen. A once-a-second nanosecond check of the
 * few watched files catches it. */
static ev_timer recheck;

static int remember_stat(watched *f)
{
    struct stat st;
    if (stat(f->path, &st) != 0)
        return 0;
    int changed = st.st_mtim.tv_sec != f->mtime.tv_sec || st.st_mtim.tv_nsec != f->mtime.tv_nsec ||
                  st.st_size != f->size || st.st_ino != f->ino;
    f->mtime = st.st_mtim;
    f->size = st.st_size;
    f->ino = st.st_ino;
    return changed;
}

/* Starts f from the stamp taken when its file was loaded (a table from
 * moonpush.host.file_stamp at idx, or false). Returns 0 if there is none. */
static int start_from_stamp(watched *f, int idx)
{
    if (!lua_istable(L, idx))
        return 0;
    lua_Number v[4];
    for (int i = 0; i < 4; i++) {
        lua_rawgeti(L, idx, i + 1);
        v[i] = lua_tonumber(L, -1);
        lua_pop(L, 1);
    }
    f->mtime.tv_sec = (time_t)v[0];
    f->mtime.tv_nsec = (long)v[1];
    f->size = (off_t)v[2];
    f->ino = (ino_t)v[3];
    return 1;
}

static void reload_plugin_file(struct ev_loop *loop, ev_timer *t, int revents)
{
    (void)loop; (void)revents;
    watched *f = t->data;
    if (f->w.attr.st_nlink == 0)
        return;   /* removed, or mid-rename: keep serving the loaded version */
    int top = lua_gettop(L);
    push_core_fn("reload_file");
    lua_pushstring(L, f->path);
    if (budgeted_pcall(LOAD_BUDGET, 1, 2) != 0 || lua_isnil(L, -2)) {
        char err[512];
        load_error(f->path, err, sizeof err);
        mp.stats.reload_failures++;
        mp_error("plugin reload refused, old version keeps serving", "file=%s error=\"%s\"", f->path,
                 mp_log_q(err));
    } else {
        mp.stats.reloads++;
        mp_info("plugin reloaded", "file=%s routes=%d", f->path, (int)lua_tointeger(L, -2));
        read_routes(&mp.cfg);   /* hook flags may have changed; paths did not */
    }
    lua_settop(L, top);
}

static void schedule_reload(struct ev_loop *loop, watched *f)
{
    ev_timer_stop(loop, &f->settle);
    ev_timer_set(&f->settle, RELOAD_SETTLE, 0.);
    ev_timer_start(loop, &f->settle);
}

static void on_plugin_changed(struct ev_loop *loop, ev_stat *w, int revents)
{
    (void)revents;
    watched *f = (watched *)w;
    remember_stat(f);
    schedule_reload(loop, f);
}

static void on_recheck(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)w; (void)revents;
    for (watched *f = watches; f; f = f->next)
        if (remember_stat(f))
            schedule_reload(loop, f);
}

void unwatch_all(struct ev_loop *loop)
{
    ev_timer_stop(loop, &recheck);
    while (watches) {
        watched *f = watches;
        watches = f->next;
        ev_stat_stop(loop, &f->w);
        ev_timer_stop(loop, &f->settle);
        free(f);
    }
}

void mp_lua_watch_plugins(struct ev_loop *loop)
{
    unwatch_all(loop);
    int top = lua_gettop(L);
    push_core_fn("plugin_files");
    if (lua_pcall(L, 0, 2, 0) != 0) {
        lua_settop(L, top);
        return;
    }
    int files = lua_gettop(L) - 1, stamps = files + 1;
    int n = (int)lua_objlen(L, files);
    for (int i = 1; i <= n; i++) {
        lua_rawgeti(L, stamps, i);
        lua_rawgeti(L, files, i);
        const char *path = lua_tostring(L, -1);
        watched *f = calloc(1, sizeof *f + strlen(path) + 1);
        if (f) {
            strcpy(f->path, path);
            ev_stat_init(&f->w, on_plugin_changed, f->path, 0.);
            ev_stat_start(loop, &f->w);
            ev_init(&f->settle, reload_plugin_file);
            f->settle.data = f;
            f->size = -1;
            /* An edit between loading the file and this point (a config
             * load, then listening, then here) differs from the stamp: it
             * is reloaded like any later one. */
            int stamped = start_from_stamp(f, -2);
            if (remember_stat(f) && stamped)
                schedule_reload(loop, f);
            f->next = watches;
            watches = f;
        }
        lua_pop(L, 2);
    }
    lua_settop(L, top);
    ev_timer_init(&recheck, on_recheck, 1., 1.);
    ev_timer_start(loop, &recheck);
}
