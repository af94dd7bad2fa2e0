/*
 * fqserver: an echo server that serves many flows from one thread with
 * fset/fqueue/fevent, as event-driven Ouroboros servers do. A second
 * thread accepts flows and adds them to the set while the first waits.
 *
 * Prints one line per event ("event fd=N type=FLOW_PKT"), echoes every SDU,
 * and deallocates a flow once it is down (its peer deallocated or died).
 *
 * SPDX-License-Identifier: MIT OR Apache-2.0
 */

#define _POSIX_C_SOURCE 200809L

#include <ouroboros/dev.h>
#include <ouroboros/errno.h>
#include <ouroboros/fccntl.h>
#include <ouroboros/fqueue.h>

#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#define BUF_SIZE 4096

static const char * type_name(int t)
{
        switch (t) {
        case FLOW_PKT:
                return "FLOW_PKT";
        case FLOW_DOWN:
                return "FLOW_DOWN";
        case FLOW_UP:
                return "FLOW_UP";
        case FLOW_ALLOC:
                return "FLOW_ALLOC";
        case FLOW_DEALLOC:
                return "FLOW_DEALLOC";
        case FLOW_PEER:
                return "FLOW_PEER";
        default:
                return "unknown";
        }
}

static void * acceptor(void * arg)
{
        fset_t * set = arg;
        int      fd;

        while ((fd = flow_accept(NULL, NULL)) >= 0) {
                /* Serve reads without blocking the event loop. */
                fccntl(fd, FLOWSFLAGS, FLOWFRDWR | FLOWFRNOBLOCK);
                if (fset_add(set, fd) < 0) {
                        printf("Failed to add flow %d.\n", fd);
                        flow_dealloc(fd);
                        continue;
                }
                printf("New flow %d.\n", fd);
                fflush(stdout);
        }

        printf("Failed to accept flow: %d.\n", fd);
        fflush(stdout);

        return NULL;
}

int main(int argc, char ** argv)
{
        char            buf[BUF_SIZE];
        struct timespec timeo = { 1, 0 };
        fset_t *        set;
        fqueue_t *      fq;
        pthread_t       t;
        long            max_events = -1;
        long            events = 0;

        if (argc > 2 && argv[1][0] == '-' && argv[1][1] == 'e')
                max_events = atol(argv[2]);

        set = fset_create();
        fq  = fqueue_create();
        if (set == NULL || fq == NULL) {
                printf("Failed to create the flow set.\n");
                return 1;
        }

        if (pthread_create(&t, NULL, acceptor, set)) {
                printf("Failed to start the acceptor.\n");
                return 1;
        }
        pthread_detach(t);

        printf("fqserver started.\n");
        fflush(stdout);

        while (max_events < 0 || events < max_events) {
                ssize_t n = fevent(set, fq, &timeo);
                int     fd;

                if (n == -ETIMEDOUT)
                        continue;
                if (n < 0) {
                        printf("fevent failed: %zd.\n", n);
                        break;
                }

                while ((fd = fqueue_next(fq)) >= 0) {
                        int     type = fqueue_type(fq);
                        ssize_t len;

                        ++events;
                        printf("event fd=%d type=%s\n", fd, type_name(type));
                        fflush(stdout);

                        switch (type) {
                        case FLOW_PKT:
                                while ((len = flow_read(fd, buf, sizeof(buf))) > 0)
                                        flow_write(fd, buf, len);
                                break;
                        case FLOW_DOWN:
                        case FLOW_PEER:
                                fset_del(set, fd);
                                flow_dealloc(fd);
                                break;
                        default:
                                break;
                        }
                }
        }

        fqueue_destroy(fq);
        fset_destroy(set);

        return 0;
}
