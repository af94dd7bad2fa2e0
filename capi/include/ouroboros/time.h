/* ethflow - libouroboros-dev: timespec and timeval helpers.
 * Differences are "tx minus t0" in the unit named; add and diff write
 * a normalised result (0 <= nanoseconds < 10^9) and return 0.
 * Needs struct timespec from <time.h>: C11, or _POSIX_C_SOURCE >= 199309L.
 * SPDX-License-Identifier: MIT OR Apache-2.0 */
#ifndef OUROBOROS_TIME_H
#define OUROBOROS_TIME_H

#include <sys/time.h>
#include <time.h>

#ifdef MILLION
#undef MILLION
#endif
#ifdef BILLION
#undef BILLION
#endif

#define MILLION 1000000L
#define BILLION 1000000000L

#define TIMESPEC_INIT_S(s)   { (s), 0 }
#define TIMESPEC_INIT_MS(ms) { (ms) / 1000, ((ms) % 1000) * MILLION }
#define TIMESPEC_INIT_US(us) { (us) / MILLION, ((us) % MILLION) * 1000 }
#define TIMESPEC_INIT_NS(ns) { (ns) / BILLION, (ns) % BILLION }

#define TIMEVAL_INIT_S(s)    { (s), 0 }
#define TIMEVAL_INIT_MS(ms)  { (ms) / 1000, ((ms) % 1000) * 1000 }
#define TIMEVAL_INIT_US(us)  { (us) / MILLION, (us) % MILLION }

static inline long ts_diff_ns(const struct timespec * t0,
                              const struct timespec * tx)
{
        return (long) (tx->tv_sec - t0->tv_sec) * BILLION
                + (tx->tv_nsec - t0->tv_nsec);
}

static inline long ts_diff_us(const struct timespec * t0,
                              const struct timespec * tx)
{
        return ts_diff_ns(t0, tx) / 1000L;
}

static inline long ts_diff_ms(const struct timespec * t0,
                              const struct timespec * tx)
{
        return ts_diff_ns(t0, tx) / MILLION;
}

static inline long tv_diff_us(const struct timeval * t0,
                              const struct timeval * tx)
{
        return (long) (tx->tv_sec - t0->tv_sec) * MILLION
                + (tx->tv_usec - t0->tv_usec);
}

static inline long tv_diff_ms(const struct timeval * t0,
                              const struct timeval * tx)
{
        return tv_diff_us(t0, tx) / 1000L;
}

/* res = t + intv */
static inline int ts_add(const struct timespec * t,
                          const struct timespec * intv,
                          struct timespec *       res)
{
        long ns = t->tv_nsec + intv->tv_nsec;

        res->tv_sec = t->tv_sec + intv->tv_sec + ns / BILLION;
        res->tv_nsec = ns % BILLION;

        return 0;
}

/* res = t - intv */
static inline int ts_diff(const struct timespec * t,
                           const struct timespec * intv,
                           struct timespec *       res)
{
        long ns = t->tv_nsec - intv->tv_nsec;

        res->tv_sec = t->tv_sec - intv->tv_sec;
        while (ns < 0) {
                ns += BILLION;
                --res->tv_sec;
        }
        res->tv_nsec = ns;

        return 0;
}

static inline int tv_add(const struct timeval * t,
                          const struct timeval * intv,
                          struct timeval *       res)
{
        long us = t->tv_usec + intv->tv_usec;

        res->tv_sec = t->tv_sec + intv->tv_sec + us / MILLION;
        res->tv_usec = us % MILLION;

        return 0;
}

static inline int tv_diff(const struct timeval * t,
                           const struct timeval * intv,
                           struct timeval *       res)
{
        long us = t->tv_usec - intv->tv_usec;

        res->tv_sec = t->tv_sec - intv->tv_sec;
        while (us < 0) {
                us += MILLION;
                --res->tv_sec;
        }
        res->tv_usec = us;

        return 0;
}

static inline int tv_to_ts(const struct timeval * tv, struct timespec * ts)
{
        ts->tv_sec  = tv->tv_sec;
        ts->tv_nsec = tv->tv_usec * 1000L;

        return 0;
}

static inline int ts_to_tv(const struct timespec * ts, struct timeval * tv)
{
        tv->tv_sec  = ts->tv_sec;
        tv->tv_usec = ts->tv_nsec / 1000L;

        return 0;
}

#endif /* OUROBOROS_TIME_H */
