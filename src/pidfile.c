/* pidfile.c — see pidfile.h. The pid goes to "<path>.<pid>.tmp" first and
 * is renamed over path, so a reader never sees an empty or half-written
 * file (and two servers starting at once never share a temporary file). */
#include "pidfile.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "log.h"

static char written[PATH_MAX];   /* the path to remove at exit; "" = none */

/* The pid a pid file names, or 0 if it names none (missing, empty, junk). */
static long read_pid(const char *path)
{
    char buf[32] = "";
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return 0;
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n <= 0)
        return 0;
    buf[n] = '\0';
    char *end;
    long pid = strtol(buf, &end, 10);
    return pid > 0 && (*end == '\n' || *end == '\0') ? pid : 0;
}

/* Whether pid is a running moonpush: alive (kill 0 finds it) and named so
 * in /proc. A process we may not inspect counts as moonpush: refusing to
 * start is the safe mistake. */
static int live_moonpush(long pid)
{
    if (pid == (long)getpid() || (kill((pid_t)pid, 0) < 0 && errno == ESRCH))
        return 0;
    char path[64], comm[64] = "";
    snprintf(path, sizeof path, "/proc/%ld/comm", pid);
    FILE *f = fopen(path, "re");
    if (!f)
        return errno != ENOENT;
    int got = fgets(comm, sizeof comm, f) != NULL;
    fclose(f);
    return !got || strncmp(comm, "moonpush", 8) == 0;
}

int mp_pidfile_check(const char *path)
{
    if (!path || !path[0])
        return 0;
    long other = read_pid(path);
    if (other && live_moonpush(other)) {
        mp_error("another moonpush is running with this pid_file: stop it first, or give this server its own pid_file",
                 "pid_file=%s pid=%ld", path, other);
        return -1;
    }
    return 0;
}

int mp_pidfile_write(const char *path)
{
    if (!path || !path[0])
        return 0;
    char tmp[PATH_MAX];
    if (snprintf(tmp, sizeof tmp, "%s.%ld.tmp", path, (long)getpid()) >= (int)sizeof tmp) {
        errno = ENAMETOOLONG;
        return -1;
    }
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0)
        return -1;
    char line[32];
    int n = snprintf(line, sizeof line, "%ld\n", (long)getpid());
    int ok = write(fd, line, (size_t)n) == n;
    int saved = errno;
    if (close(fd) != 0 && ok) {
        ok = 0;
        saved = errno;
    }
    if (!ok || rename(tmp, path) != 0) {
        saved = ok ? errno : saved;
        unlink(tmp);
        errno = saved;
        return -1;
    }
    snprintf(written, sizeof written, "%s", path);
    return 0;
}

void mp_pidfile_remove(void)
{
    if (written[0] && read_pid(written) == (long)getpid())
        unlink(written);
    written[0] = '\0';
}
