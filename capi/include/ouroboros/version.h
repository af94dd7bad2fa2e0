/* ethflow - libouroboros-dev: version of the application API.
 * SPDX-License-Identifier: MIT OR Apache-2.0 */
#ifndef OUROBOROS_VERSION_H
#define OUROBOROS_VERSION_H

/* The Ouroboros application API this library provides (see docs/capi.md). */
#define OUROBOROS_VERSION_MAJOR 0
#define OUROBOROS_VERSION_MINOR 23
#define OUROBOROS_VERSION_PATCH 0

/* The ethflow release that built it. */
#define ETHFLOW_VERSION_MAJOR 0
#define ETHFLOW_VERSION_MINOR 1
#define ETHFLOW_VERSION_PATCH 0
#define ETHFLOW_VERSION_STRING "0.1.0"

#endif /* OUROBOROS_VERSION_H */
