/* procstat.h — the process figures every Prometheus exporter reports
 * (process_cpu_seconds_total, process_resident_memory_bytes, ...), read from
 * /proc/self when /metrics is scraped: nothing is sampled in between.
 */
#ifndef MP_PROCSTAT_H
#define MP_PROCSTAT_H

typedef struct mp_procstat {
    double cpu_seconds;          /* user + system CPU time */
    double resident_bytes;       /* resident set size */
    double virtual_bytes;        /* virtual memory size */
    double open_fds;             /* entries of /proc/self/fd */
    double max_fds;              /* RLIMIT_NOFILE, soft */
    double start_time;           /* unix seconds the process started */
} mp_procstat;

/* Fills out; a figure that cannot be read is -1 (the caller leaves it out).
 * Costs a few small reads of /proc and one directory scan of /proc/self/fd
 * (bounded by the open-files limit): scrape time only. */
void mp_procstat_read(mp_procstat *out);

#endif
