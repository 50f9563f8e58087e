/* pidfile.c — see pidfile.h. The pid goes to "<path>.tmp" first and is
 * renamed over path, so a reader never sees an empty or half-written file. */
#include "pidfile.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

static char written[PATH_MAX];   /* the path to remove at exit; "" = none */

int mp_pidfile_write(const char *path)
{
    if (!path || !path[0])
        return 0;
    char tmp[PATH_MAX];
    if (snprintf(tmp, sizeof tmp, "%s.tmp", path) >= (int)sizeof tmp) {
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
    if (written[0])
        unlink(written);
    written[0] = '\0';
}
