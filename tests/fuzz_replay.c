/* fuzz_replay.c — a fuzz harness (fuzz/<name>.c) without libFuzzer: a
 * main() that runs it over every file of fuzz/corpus/<name>/ and
 * fuzz/regressions/<name>/ (or over the files and directories given as
 * arguments), each input in a child process of its own, so a crash, a
 * sanitizer report (a leak included: the child frees everything before it
 * exits) or a hang is blamed on one input and the others still run.
 *
 * Built with gcc per harness (-DFUZZ_NAME="http"), it is the C test
 * `build/tests/fuzz_<name>` of `make test`: it prints each failing input and
 * one line "fuzz_<name>: N passed, N failed" for tests/run_all.sh.
 */
#include <dirent.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "fuzz.h"
#include "server.h"

#ifndef FUZZ_NAME
#error "build with -DFUZZ_NAME=\"<harness>\""
#endif

#define INPUT_SECONDS 30   /* an input that runs longer is a hang */

static int passed, failed;

static uint8_t *read_input(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    size_t cap = 4096, n = 0, got;
    uint8_t *buf = malloc(cap);
    while (buf && (got = fread(buf + n, 1, cap - n, f)) > 0) {
        n += got;
        if (n == cap) {
            uint8_t *bigger = realloc(buf, cap *= 2);
            if (!bigger)
                free(buf);
            buf = bigger;
        }
    }
    fclose(f);
    *len = n;
    return buf;
}

/* Runs the harness on one file in a child; counts and reports the outcome. */
static void replay(const char *path)
{
    size_t len = 0;
    uint8_t *data = read_input(path, &len);
    if (!data) {
        printf("FAIL %s: cannot read it (%s)\n", path, strerror(errno));
        failed++;
        return;
    }
    fflush(NULL);
    pid_t pid = fork();
    if (pid == 0) {
        if (mp.loop)
            ev_loop_fork(mp.loop);   /* the parent's epoll set is not ours to change */
        alarm(INPUT_SECONDS);
        LLVMFuzzerTestOneInput(data, len);
        free(data);
        fuzz_teardown();
        exit(0);
    }
    free(data);
    int status = 0;
    if (pid < 0 || waitpid(pid, &status, 0) < 0) {
        printf("FAIL %s: cannot run it (%s)\n", path, strerror(errno));
        failed++;
    } else if (WIFEXITED(status) && WEXITSTATUS(status) == 0) {
        passed++;
    } else {
        if (WIFSIGNALED(status))
            printf("FAIL %s: killed by signal %d%s\n", path, WTERMSIG(status),
                   WTERMSIG(status) == SIGALRM ? " (a hang: past the time an input may take)" : "");
        else
            printf("FAIL %s: exit code %d (a sanitizer report above?)\n", path, WEXITSTATUS(status));
        failed++;
    }
}

static int is_hidden(const struct dirent *e)
{
    return e->d_name[0] != '.';
}

/* Every file of a directory, in name order; returns how many. */
static int replay_dir(const char *dir)
{
    struct dirent **names;
    int n = scandir(dir, &names, is_hidden, alphasort);
    if (n < 0)
        return -1;
    int files = 0;
    for (int i = 0; i < n; i++) {
        char path[4096];
        struct stat st;
        snprintf(path, sizeof path, "%s/%s", dir, names[i]->d_name);
        if (stat(path, &st) == 0 && S_ISREG(st.st_mode)) {
            replay(path);
            files++;
        }
        free(names[i]);
    }
    free(names);
    return files;
}

static void replay_path(const char *path)
{
    struct stat st;
    if (stat(path, &st) == 0 && S_ISDIR(st.st_mode))
        replay_dir(path);
    else
        replay(path);
}

int main(int argc, char **argv)
{
    LLVMFuzzerInitialize(&argc, &argv);
    if (argc > 1) {
        for (int i = 1; i < argc; i++)
            replay_path(argv[i]);
    } else {
        char corpus[4096], regressions[4096];
        snprintf(corpus, sizeof corpus, "%s/fuzz/corpus/%s", fuzz_root(), FUZZ_NAME);
        snprintf(regressions, sizeof regressions, "%s/fuzz/regressions/%s", fuzz_root(), FUZZ_NAME);
        /* No corpus means the test ran from the wrong place: that fails,
         * it does not pass with nothing replayed. */
        if (replay_dir(corpus) <= 0) {
            printf("FAIL %s: no corpus files (run from the repository root or set MOONPUSH_ROOT)\n", corpus);
            failed++;
        }
        replay_dir(regressions);   /* may not exist yet */
    }
    printf("fuzz_%s: %d passed, %d failed\n", FUZZ_NAME, passed, failed);
    return failed ? 1 : 0;
}
