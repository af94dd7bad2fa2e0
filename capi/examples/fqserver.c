/*
 * fqserver: an echo server that serves many flows from one thread with
 * fset/fqueue/fevent, as event-driven Ouroboros servers do. A second
 * thread accepts flows and adds them to the set while the first waits.
 *
 * Prints one line per event ("event fd=N type=FLOW_PKT"), echoes every SDU,
 * and deallocates a flow once it is down (its peer deallocated or died).
 *
 *     fqserver [-a FLOWS] [-e EVENTS]
 *
 * -a: accept that many flows, then stop accepting; -e: return from main
 * after that many events (with -a, a run that ends cleanly, for valgrind).
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

struct acceptor_args {
        fset_t * set;
        long     max_flows;
};

static void * acceptor(void * arg)
{
        struct acceptor_args * a = arg;
        fset_t *               set = a->set;
        long                   accepted = 0;
        int                    fd;

        while (a->max_flows < 0 || accepted++ < a->max_flows) {
                fd = flow_accept(NULL, NULL);
                if (fd < 0)
                        break;
                /* Serve reads without blocking the event loop. */
                fccntl(fd, FLOWSFLAGS, FLOWFRDWR | FLOWFRNOBLOCK);
                /* Said before it is added, so it comes before its events. */
                printf("New flow %d.\n", fd);
                fflush(stdout);
                if (fset_add(set, fd) < 0) {
                        printf("Failed to add flow %d.\n", fd);
                        fflush(stdout);
                        flow_dealloc(fd);
                }
        }

        return NULL;
}

int main(int argc, char ** argv)
{
        char                 buf[BUF_SIZE];
        struct timespec      timeo = { 1, 0 };
        struct acceptor_args args = { NULL, -1 };
        fset_t *             set;
        fqueue_t *           fq;
        pthread_t            t;
        long                 max_events = -1;
        long                 events = 0;
        int                  c;

        while ((c = getopt(argc, argv, "a:e:")) != -1) {
                switch (c) {
                case 'a':
                        args.max_flows = atol(optarg);
                        break;
                case 'e':
                        max_events = atol(optarg);
                        break;
                default:
                        printf("Usage: fqserver [-a FLOWS] [-e EVENTS]\n");
                        return 2;
                }
        }

        set = fset_create();
        fq  = fqueue_create();
        if (set == NULL || fq == NULL) {
                printf("Failed to create the flow set.\n");
                return 1;
        }

        args.set = set;
        if (pthread_create(&t, NULL, acceptor, &args)) {
                printf("Failed to start the acceptor.\n");
                return 1;
        }
        /* Accepting for ever: nobody waits for it. */
        if (args.max_flows < 0)
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

        if (args.max_flows >= 0)
                pthread_join(t, NULL);

        fqueue_destroy(fq);
        fset_destroy(set);

        return 0;
}
