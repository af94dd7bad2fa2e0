/* ethflow - libouroboros-dev: byte order helpers (network order is big
 * endian): hton16/32/64, ntoh16/32/64, and betoh / letoh spellings.
 * SPDX-License-Identifier: MIT OR Apache-2.0 */
#ifndef OUROBOROS_ENDIAN_H
#define OUROBOROS_ENDIAN_H

#include <stdint.h>

#if !defined(__BYTE_ORDER__) || !defined(__ORDER_LITTLE_ENDIAN__)
#error "ouroboros/endian.h needs a compiler that predefines __BYTE_ORDER__"
#endif

#if __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
#define OUROBOROS_BE16(x) ((uint16_t) __builtin_bswap16((uint16_t) (x)))
#define OUROBOROS_BE32(x) ((uint32_t) __builtin_bswap32((uint32_t) (x)))
#define OUROBOROS_BE64(x) ((uint64_t) __builtin_bswap64((uint64_t) (x)))
#define OUROBOROS_LE16(x) ((uint16_t) (x))
#define OUROBOROS_LE32(x) ((uint32_t) (x))
#define OUROBOROS_LE64(x) ((uint64_t) (x))
#else
#define OUROBOROS_BE16(x) ((uint16_t) (x))
#define OUROBOROS_BE32(x) ((uint32_t) (x))
#define OUROBOROS_BE64(x) ((uint64_t) (x))
#define OUROBOROS_LE16(x) ((uint16_t) __builtin_bswap16((uint16_t) (x)))
#define OUROBOROS_LE32(x) ((uint32_t) __builtin_bswap32((uint32_t) (x)))
#define OUROBOROS_LE64(x) ((uint64_t) __builtin_bswap64((uint64_t) (x)))
#endif

/* The C library may already provide the htobe / be..toh spellings. */
#ifndef htobe16
#define htobe16(x) OUROBOROS_BE16(x)
#define htobe32(x) OUROBOROS_BE32(x)
#define htobe64(x) OUROBOROS_BE64(x)
#define htole16(x) OUROBOROS_LE16(x)
#define htole32(x) OUROBOROS_LE32(x)
#define htole64(x) OUROBOROS_LE64(x)
#endif

#define betoh16(x) OUROBOROS_BE16(x)
#define betoh32(x) OUROBOROS_BE32(x)
#define betoh64(x) OUROBOROS_BE64(x)
#define letoh16(x) OUROBOROS_LE16(x)
#define letoh32(x) OUROBOROS_LE32(x)
#define letoh64(x) OUROBOROS_LE64(x)

#define hton16(x) OUROBOROS_BE16(x)
#define hton32(x) OUROBOROS_BE32(x)
#define hton64(x) OUROBOROS_BE64(x)
#define ntoh16(x) OUROBOROS_BE16(x)
#define ntoh32(x) OUROBOROS_BE32(x)
#define ntoh64(x) OUROBOROS_BE64(x)

#endif /* OUROBOROS_ENDIAN_H */
