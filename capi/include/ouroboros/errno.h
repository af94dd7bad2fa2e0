/* ethflow - libouroboros-dev: error numbers beyond the C library's.
 * Functions return them negated (-EFLOWDOWN ...), as they do -EAGAIN.
 * SPDX-License-Identifier: MIT OR Apache-2.0 */
#ifndef OUROBOROS_ERRNO_H
#define OUROBOROS_ERRNO_H

#include <errno.h>

#define ENOTALLOC   1000 /* no flow on this descriptor             */
#define EIPCPTYPE   1001 /* unknown IPC process type               */
#define EIRMD       1002 /* irmd cannot be reached                 */
#define EIPCP       1003 /* IPC process error                      */
#define EIPCPSTATE  1004 /* IPC process in the wrong state         */
#define EFLOWDOWN   1005 /* flow down: peer gone, link or IPCP lost */
#define EFLOWPEER   1006 /* peer stopped answering (liveness)      */
#define ENAME       1007 /* name unknown or unreachable            */
#define ECRYPT      1008 /* encryption failure                     */
#define EAUTH       1009 /* authentication failure                 */

#endif /* OUROBOROS_ERRNO_H */
