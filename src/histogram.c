/* histogram.c — see histogram.h. */
#include "histogram.h"

#include <stddef.h>

const double mp_histogram_bounds[MP_HISTOGRAM_BUCKETS] = {0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01,
                                                          0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10};

void mp_histogram_observe(mp_histogram *h, double v)
{
    if (v < 0)
        v = 0;
    size_t i = 0;
    while (i < MP_HISTOGRAM_BUCKETS && v > mp_histogram_bounds[i])
        i++;
    h->counts[i]++;
    h->n++;
    h->sum += v;
}
