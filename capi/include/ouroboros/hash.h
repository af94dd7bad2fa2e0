/* ethflow - libouroboros-dev: hash algorithm names and printing helpers,
 * for programs that print or size name hashes.
 * SPDX-License-Identifier: MIT OR Apache-2.0 */
#ifndef OUROBOROS_HASH_H
#define OUROBOROS_HASH_H

#include <ouroboros/cdefs.h>

#include <stddef.h>
#include <stdint.h>

enum hash_algo {
        HASH_CRC32 = 0,
        HASH_MD5,
        HASH_SHA3_224,
        HASH_SHA3_256,
        HASH_SHA3_384,
        HASH_SHA3_512
};

/* printf("%" ...) the first four bytes of a hash, most significant first. */
#define HASH_FMT32 "%02x%02x%02x%02x"
#define HASH_VAL32(h)                                    \
        ((const uint8_t *) (h))[0], ((const uint8_t *) (h))[1], \
        ((const uint8_t *) (h))[2], ((const uint8_t *) (h))[3]
#define HASH_FMT   HASH_FMT32
#define HASH_VAL(h) HASH_VAL32(h)

__BEGIN_DECLS

/* Digest length in bytes, 0 for an unknown algorithm. */
uint16_t hash_len(enum hash_algo algo);

__END_DECLS

#endif /* OUROBOROS_HASH_H */
