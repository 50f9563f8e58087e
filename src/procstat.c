/* procstat.c — see procstat.h. The fields of /proc/self/stat are those of
 * proc(5): after the command name in parentheses (which may itself hold
 * spaces and parentheses, hence the search for the last ')'), field 3 is the
 * state; utime and stime are fields 14 and 15 (clock ticks), starttime 22
 * (ticks after boot), vsize 23 (bytes), rss 24 (pages). */
#include "procstat.h"

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

/* Reads a small /proc file into buf (NUL-terminated); -1 if it cannot. */
static int read_small(const char *path, char *buf, size_t cap)
{
    FILE *f = fopen(path, "re");
    if (!f)
        return -1;
    size_t n = fread(buf, 1, cap - 1, f);
    fclose(f);
    buf[n] = '\0';
    return n > 0 ? 0 : -1;
}

/* The system's boot time (unix seconds), from /proc/stat's btime line. */
static double boot_time(void)
{
    char buf[8192];
    if (read_small("/proc/stat", buf, sizeof buf) < 0)
        return -1;
    const char *p = strstr(buf, "\nbtime ");
    return p ? strtod(p + 7, NULL) : -1;
}

static void read_stat(mp_procstat *out)
{
    char buf[1024];
    if (read_small("/proc/self/stat", buf, sizeof buf) < 0)
        return;
    char *p = strrchr(buf, ')');
    if (!p)
        return;
    /* Fields 3.. after ") ": field k is at index k - 3. */
    unsigned long long v[24] = {0};
    int n = 0;
    for (char *tok = strtok(p + 1, " "); tok && n < 24; tok = strtok(NULL, " "), n++)
        v[n] = strtoull(tok, NULL, 10);
    if (n < 22)
        return;
    double ticks = (double)sysconf(_SC_CLK_TCK), page = (double)sysconf(_SC_PAGESIZE);
    if (ticks <= 0 || page <= 0)
        return;
    out->cpu_seconds = (double)(v[14 - 3] + v[15 - 3]) / ticks;
    out->virtual_bytes = (double)v[23 - 3];
    out->resident_bytes = (double)v[24 - 3] * page;
    double boot = boot_time();
    if (boot > 0)
        out->start_time = boot + (double)v[22 - 3] / ticks;
}

static double count_fds(void)
{
    DIR *d = opendir("/proc/self/fd");
    if (!d)
        return -1;
    double n = 0;
    for (struct dirent *e; (e = readdir(d));)
        if (e->d_name[0] != '.')
            n++;
    closedir(d);
    return n - 1;   /* the directory's own fd, open while it is listed */
}

void mp_procstat_read(mp_procstat *out)
{
    *out = (mp_procstat){-1, -1, -1, -1, -1, -1};
    read_stat(out);
    out->open_fds = count_fds();
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0)
        out->max_fds = rl.rlim_cur == RLIM_INFINITY ? -1 : (double)rl.rlim_cur;
}
