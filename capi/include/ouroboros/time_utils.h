/* ethflow - libouroboros-dev: the older name of <ouroboros/time.h>.
 * SPDX-License-Identifier: MIT OR Apache-2.0 */
#ifndef OUROBOROS_TIME_UTILS_H
#define OUROBOROS_TIME_UTILS_H

#include <ouroboros/time.h>

#endif /* OUROBOROS_TIME_UTILS_H */
