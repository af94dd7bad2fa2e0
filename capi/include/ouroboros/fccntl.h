/* ethflow - libouroboros-dev: per-flow settings (fccntl).
 * SPDX-License-Identifier: MIT OR Apache-2.0 */
#ifndef OUROBOROS_FCCNTL_H
#define OUROBOROS_FCCNTL_H

#include <ouroboros/cdefs.h>
#include <ouroboros/qos.h>

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/time.h>
#include <time.h>

/* Flow flags (FLOWSFLAGS / FLOWGFLAGS); access modes as open(2)'s. */
#define FLOWFRDONLY   00000000 /* reads only                     */
#define FLOWFWRONLY   00000001 /* writes only                    */
#define FLOWFRDWR     00000002 /* reads and writes               */
#define FLOWFACCMODE  00000003 /* mask of the access mode        */
#define FLOWFDOWN     00000004 /* flow is (marked) down          */
#define FLOWFRNOBLOCK 00001000 /* flow_read does not wait        */
#define FLOWFWNOBLOCK 00002000 /* flow_write does not wait       */
#define FLOWFNONBLOCK (FLOWFRNOBLOCK | FLOWFWNOBLOCK)
#define FLOWFRNOPART  00010000 /* no partial reads               */
#define FLOWFWNOPART  00020000 /* no partial writes              */
#define FLOWFDEFAULT  (FLOWFRDWR | FLOWFWNOPART)
#define FLOWFINVALID  (FLOWFWRONLY | FLOWFRDWR)

/* FRCT flags (FRCTSFLAGS / FRCTGFLAGS): kept, no effect on ethflow. */
#define FRCTFRESCNTRL 00000001 /* resource control               */
#define FRCTFRTX      00000002 /* retransmission (read-only)     */
#define FRCTFLINGER   00000004 /* finish sending on dealloc      */

/* Commands. */
#define FLOWSRCVTIMEO 00000001 /* struct timespec *: read timeout, NULL = none  */
#define FLOWGRCVTIMEO 00000002 /* struct timespec *: get it (-EPERM if none)    */
#define FLOWSSNDTIMEO 00000003 /* struct timespec *: write timeout, NULL = none */
#define FLOWGSNDTIMEO 00000004 /* struct timespec *: get it (-EPERM if none)    */
#define FLOWGQOSSPEC  00000005 /* qosspec_t *: the flow's QoS                   */
#define FLOWSFLAGS    00000006 /* uint32_t: set flow flags                      */
#define FLOWGFLAGS    00000007 /* uint32_t *: get flow flags                    */
#define FLOWGRXQLEN   00000010 /* size_t *: SDUs waiting to be read             */
#define FLOWGTXQLEN   00000011 /* size_t *: SDUs written, not yet sent          */
#define FRCTSFLAGS    00001000 /* uint16_t: set FRCT flags                      */
#define FRCTGFLAGS    00002000 /* uint16_t *: get FRCT flags                    */

__BEGIN_DECLS

/* The library's entry points behind fccntl: one for commands that take a
 * pointer, one for commands that take a value. */
int ethflow_fccntl_ptr(int fd, int cmd, void * arg);
int ethflow_fccntl_val(int fd, int cmd, uint32_t arg);

/* int fccntl(int fd, int cmd, ...): the third argument's type depends on
 * cmd (see above). Returns 0, or -EINVAL, -EPERM, -EBADF, -ENOTALLOC,
 * -ENOTSUP. */
static inline int fccntl(int fd, int cmd, ...)
{
        va_list ap;
        int     ret;

        va_start(ap, cmd);
        if (cmd == FLOWSFLAGS || cmd == FRCTSFLAGS)
                ret = ethflow_fccntl_val(fd, cmd,
                                         (uint32_t) va_arg(ap, unsigned int));
        else
                ret = ethflow_fccntl_ptr(fd, cmd, va_arg(ap, void *));
        va_end(ap);

        return ret;
}

__END_DECLS

#endif /* OUROBOROS_FCCNTL_H */
