/* Harness: the config loader, lua_host.c mp_lua_init and reload through
 * lua/moonpush/config.lua and plugins.lua: a config text that is not Lua,
 * raises, returns the wrong types, names missing or broken plugins, or
 * never ends (the load runs under an instruction budget).
 *
 * Input: the text of a config file. It is written to conf/moonpush.lua in
 * a private temporary directory laid out like the repository around
 * examples/: ../plugins is the bundled plugins, plugins/ (the default
 * plugin_dir) is examples/plugins, so the example configs load as they are;
 * ../fuzz-plugins is fuzz/plugins.
 * A config that loads is then reloaded, as SIGHUP would. Each input gets a
 * Lua state of its own. */
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fuzz.h"
#include "log.h"
#include "lua_host.h"
#include "server.h"

static char dir[] = "/tmp/moonpush-fuzz-config-XXXXXX";
static char config_path[sizeof dir + 32];
static pid_t owner;

/* Links in the temporary directory: examples/ laid out as in the repository. */
static const struct { const char *link, *target; } links[] = {
    {"plugins", "plugins"},
    {"conf/plugins", "examples/plugins"},
    {"conf/pos_tokens.lua", "examples/pos_tokens.lua"},
    {"fuzz-plugins", "fuzz/plugins"},
};

static void path_in(char *out, size_t len, const char *name)
{
    snprintf(out, len, "%s/%s", dir, name);
}

/* The directory goes when the process that made it exits (not its children:
 * the replay driver forks one per input). */
static void remove_dir(void)
{
    if (getpid() != owner)
        return;
    char p[sizeof dir + 32];
    unlink(config_path);
    for (size_t i = 0; i < sizeof links / sizeof links[0]; i++) {
        path_in(p, sizeof p, links[i].link);
        unlink(p);
    }
    path_in(p, sizeof p, "conf");
    rmdir(p);
    rmdir(dir);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc; (void)argv;
    if (!mkdtemp(dir))
        fuzz_fail("cannot make the temporary config directory");
    owner = getpid();
    atexit(remove_dir);
    char p[sizeof dir + 32], target[PATH_MAX + 32], abs[PATH_MAX];
    path_in(p, sizeof p, "conf");
    if (mkdir(p, 0700) < 0)
        fuzz_fail("cannot make the temporary config directory");
    for (size_t i = 0; i < sizeof links / sizeof links[0]; i++) {
        snprintf(target, sizeof target, "%s/%s", fuzz_root(), links[i].target);
        path_in(p, sizeof p, links[i].link);
        if (!realpath(target, abs) || symlink(abs, p) < 0)
            fuzz_fail("cannot link the repository's plugins into the temporary directory");
    }
    path_in(config_path, sizeof config_path, "conf/moonpush.lua");
    mp_log_configure(0, "/dev/null");   /* plugins may log while they load */
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    int fd = open(config_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0 || write(fd, data, size) != (ssize_t)size || close(fd) < 0)
        fuzz_fail("cannot write the config file");
    mp_config cfg;
    memset(&cfg, 0, sizeof cfg);
    char err[512], summary[1024];
    int rc = mp_lua_init(config_path, &cfg, err, sizeof err);
    if (rc == 0)
        rc = mp_lua_reload_config(&cfg, summary, sizeof summary, err, sizeof err);
    if (getenv("FUZZ_SHOW") && strcmp(getenv("FUZZ_SHOW"), "1") == 0)
        fprintf(stderr, "config: %s\n", rc == 0 ? "loaded and reloaded" : err);
    mp_lua_close();
    mp_config_free(&cfg);
    return 0;
}
