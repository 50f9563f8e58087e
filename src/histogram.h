/* histogram.h — latency histograms with fixed buckets, for /metrics.
 *
 * The module that measures owns its histogram and observes into it (O(buckets));
 * metrics.c formats every one when scraped. Living at the bottom, a
 * histogram lets a low layer (delivery, net) be measured without knowing
 * the metrics module above it.
 */
#ifndef MP_HISTOGRAM_H
#define MP_HISTOGRAM_H

#include <stdint.h>

/* Upper bounds in seconds, 100 µs to 10 s (mp_histogram_bounds). */
#define MP_HISTOGRAM_BUCKETS 16
extern const double mp_histogram_bounds[MP_HISTOGRAM_BUCKETS];

typedef struct mp_histogram {
    uint64_t counts[MP_HISTOGRAM_BUCKETS + 1];   /* the last one is +Inf */
    uint64_t n;
    double sum;
} mp_histogram;

/* Counts v (seconds; a negative v, a clock step, counts as 0). */
void mp_histogram_observe(mp_histogram *h, double v);

#endif
