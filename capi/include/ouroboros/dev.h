/* ethflow - libouroboros-dev: allocate, use and release flows.
 * Every call returns a negative error number on failure (-EFLOWDOWN,
 * -ETIMEDOUT, -EAGAIN ...); a NULL timeout waits without bound.
 * SPDX-License-Identifier: MIT OR Apache-2.0 */
#ifndef OUROBOROS_DEV_H
#define OUROBOROS_DEV_H

#include <ouroboros/cdefs.h>
#include <ouroboros/qos.h>

#include <sys/types.h>
#include <unistd.h>
#include <time.h>

/* Declared by <time.h> under POSIX or C11; named here so the prototypes
 * below mean the same struct in any mode. */
struct timespec;

__BEGIN_DECLS

/* A flow to the program registered as dst_name; returns its descriptor.
 * qs NULL: raw service with irmd's liveness timeout; otherwise *qs says
 * what is asked and is updated to what was granted. */
int     flow_alloc(const char *            dst_name,
                   qosspec_t *             qs,
                   const struct timespec * timeo);

/* Waits for a flow to one of the names this program is bound to. */
int     flow_accept(qosspec_t *             qs,
                    const struct timespec * timeo);

/* Broadcast layers: not provided by ethflow, returns -ENOTSUP. */
int     flow_join(const char *            bc,
                  const struct timespec * timeo);

int     flow_dealloc(int fd);

ssize_t flow_write(int          fd,
                   const void * buf,
                   size_t       count);

ssize_t flow_read(int    fd,
                  void * buf,
                  size_t count);

__END_DECLS

#endif /* OUROBOROS_DEV_H */
