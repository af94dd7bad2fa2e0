/* ethflow - libouroboros-dev: waiting on many flows (fset, fqueue, fevent).
 * SPDX-License-Identifier: MIT OR Apache-2.0 */
#ifndef OUROBOROS_FQUEUE_H
#define OUROBOROS_FQUEUE_H

#include <ouroboros/cdefs.h>

#include <stdbool.h>
#include <sys/types.h>
#include <time.h>

/* What happened to a flow (fqueue_type). */
enum fqtype {
        FLOW_PKT     = (1 << 0), /* SDUs wait to be read           */
        FLOW_DOWN    = (1 << 1), /* flow down (reads: -EFLOWDOWN)  */
        FLOW_UP      = (1 << 2), /* flow usable again              */
        FLOW_ALLOC   = (1 << 3), /* (not reported by ethflow)      */
        FLOW_DEALLOC = (1 << 4), /* this process deallocated it    */
        FLOW_PEER    = (1 << 5)  /* peer unresponsive (-EFLOWPEER) */
};

typedef struct flow_set fset_t;
typedef struct fqueue   fqueue_t;

/* Declared by <time.h> under POSIX or C11; named here so the prototypes
 * below mean the same struct in any mode. */
struct timespec;

__BEGIN_DECLS

fset_t *    fset_create(void);

void        fset_destroy(fset_t * set);

void        fset_zero(fset_t * set);

/* 0, or -EBADF / -ENOTALLOC for a bad descriptor, -EPERM if the flow
 * is in another set already. */
int         fset_add(fset_t * set,
                     int      fd);

bool        fset_has(const fset_t * set,
                     int            fd);

void        fset_del(fset_t * set,
                     int      fd);

fqueue_t *  fqueue_create(void);

void        fqueue_destroy(fqueue_t * fq);

/* Descriptor of the next event, -EPERM when none is left. */
int         fqueue_next(fqueue_t * fq);

/* Type of the event fqueue_next returned last. */
enum fqtype fqueue_type(fqueue_t * fq);

/* Waits for events on the flows in set, puts them in fq and returns how
 * many; -ETIMEDOUT when timeo passed first (NULL: wait without bound). */
ssize_t     fevent(fset_t *                set,
                   fqueue_t *              fq,
                   const struct timespec * timeo);

__END_DECLS

#endif /* OUROBOROS_FQUEUE_H */
