/* ethflow - libouroboros-dev: C/C++ linkage helpers.
 * SPDX-License-Identifier: MIT OR Apache-2.0 */
#ifndef OUROBOROS_CDEFS_H
#define OUROBOROS_CDEFS_H

#ifndef __BEGIN_DECLS
# ifdef __cplusplus
#  define __BEGIN_DECLS extern "C" {
#  define __END_DECLS   }
# else
#  define __BEGIN_DECLS
#  define __END_DECLS
# endif
#endif

#endif /* OUROBOROS_CDEFS_H */
