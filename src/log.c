/* log.c — see log.h. Lines are built in one bounded stack buffer and written
 * with one write(2), so lines from one process never interleave. */
#include "log.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/time.h>
#include <unistd.h>

int mp_log_level = MP_LOG_INFO;

static const char *level_names[] = {"debug", "info", "warn", "error"};

void mp_log(int level, const char *msg, const char *fmt, ...)
{
    if (level < mp_log_level)
        return;
    char line[1024];
    struct timeval tv;
    gettimeofday(&tv, NULL);
    long long ms = (long long)tv.tv_sec * 1000 + tv.tv_usec / 1000;
    int n = snprintf(line, sizeof line, "ts=%lld level=%s msg=\"%s\"", ms, level_names[level], msg);
    if (fmt && n > 0 && (size_t)n < sizeof line - 2) {
        line[n++] = ' ';
        va_list ap;
        va_start(ap, fmt);
        int m = vsnprintf(line + n, sizeof line - (size_t)n, fmt, ap);
        va_end(ap);
        n = m < 0 ? n - 1 : n + m;
    }
    if (n < 0)
        return;
    if ((size_t)n > sizeof line - 2)
        n = sizeof line - 2;   /* truncated: still one line */
    line[n++] = '\n';
    ssize_t w = write(STDERR_FILENO, line, (size_t)n);
    (void)w;
}
