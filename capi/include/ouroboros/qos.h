/* ethflow - libouroboros-dev: what a flow asks of the network.
 * SPDX-License-Identifier: MIT OR Apache-2.0 */
#ifndef OUROBOROS_QOS_H
#define OUROBOROS_QOS_H

#include <stdint.h>
#include <stdbool.h>

/* ethflow acts on `timeout` (the flow's liveness timeout; 0 = irmd's
 * default); the other fields travel with the flow request. */
typedef struct qos_spec {
        uint32_t delay;        /* ms                                  */
        uint64_t bandwidth;    /* bit/s                               */
        uint8_t  availability; /* class of nines                      */
        uint32_t loss;         /* tolerated packet loss               */
        uint32_t ber;          /* bit errors per 10^9 bits            */
        uint8_t  in_order;     /* ask for in-order delivery           */
        uint32_t max_gap;      /* ms                                  */
        uint32_t timeout;      /* peer liveness timeout, ms           */
} qosspec_t;

#define QOS_DEFAULT_TIMEOUT 120000 /* ms, the cubes' liveness timeout */

static const qosspec_t qos_raw = {
        .delay = UINT32_MAX, .bandwidth = 0, .availability = 0,
        .loss = 1, .ber = 1, .in_order = 0, .max_gap = UINT32_MAX,
        .timeout = QOS_DEFAULT_TIMEOUT
};

static const qosspec_t qos_raw_no_errors = {
        .delay = UINT32_MAX, .bandwidth = 0, .availability = 0,
        .loss = 1, .ber = 0, .in_order = 0, .max_gap = UINT32_MAX,
        .timeout = QOS_DEFAULT_TIMEOUT
};

static const qosspec_t qos_best_effort = {
        .delay = UINT32_MAX, .bandwidth = 0, .availability = 0,
        .loss = 1, .ber = 0, .in_order = 1, .max_gap = UINT32_MAX,
        .timeout = QOS_DEFAULT_TIMEOUT
};

static const qosspec_t qos_video = {
        .delay = 100, .bandwidth = UINT64_MAX, .availability = 3,
        .loss = 1, .ber = 0, .in_order = 1, .max_gap = 100,
        .timeout = QOS_DEFAULT_TIMEOUT
};

static const qosspec_t qos_voice = {
        .delay = 50, .bandwidth = 100000, .availability = 5,
        .loss = 1, .ber = 0, .in_order = 1, .max_gap = 50,
        .timeout = QOS_DEFAULT_TIMEOUT
};

static const qosspec_t qos_data = {
        .delay = 1000, .bandwidth = 0, .availability = 0,
        .loss = 0, .ber = 0, .in_order = 1, .max_gap = 2000,
        .timeout = QOS_DEFAULT_TIMEOUT
};

#endif /* OUROBOROS_QOS_H */
