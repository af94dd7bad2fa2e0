/*
 * cancel: a server that stops the way the model's servers do, by
 * cancelling its threads while they wait inside the library: one blocked
 * in flow_read, one in flow_accept, one in fevent. SIGINT or SIGTERM (taken
 * with sigwait in main) cancels and joins them, deallocates the flow and
 * exits 0, printing how long the threads took to go.
 *
 * SPDX-License-Identifier: MIT OR Apache-2.0
 */

#define _POSIX_C_SOURCE 200809L

#include <ouroboros/dev.h>
#include <ouroboros/errno.h>
#include <ouroboros/fqueue.h>

#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#define BUF_SIZE 2048

static int             flow_fd = -1;
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t  cond = PTHREAD_COND_INITIALIZER;
static fset_t *        set;
static fqueue_t *      fq;

static void * reader(void * arg)
{
        char    buf[BUF_SIZE];
        ssize_t n;
        int     fd;

        (void) arg;

        fd = flow_accept(NULL, NULL);
        if (fd < 0) {
                printf("Failed to accept flow: %d.\n", fd);
                return NULL;
        }

        pthread_mutex_lock(&lock);
        flow_fd = fd;
        pthread_cond_broadcast(&cond);
        pthread_mutex_unlock(&lock);

        n = flow_read(fd, buf, sizeof(buf));
        if (n > 0)
                flow_write(fd, buf, n);

        printf("reader waiting.\n");
        fflush(stdout);

        /* Blocks: the client sends nothing more. */
        n = flow_read(fd, buf, sizeof(buf));
        printf("reader: second read returned %zd.\n", n);

        return NULL;
}

static void * acceptor(void * arg)
{
        int fd;

        (void) arg;

        /* Blocks: no second client comes. */
        fd = flow_accept(NULL, NULL);
        printf("acceptor: flow_accept returned %d.\n", fd);

        return NULL;
}

static void * watcher(void * arg)
{
        ssize_t n;

        (void) arg;

        /* Blocks: the set is empty. */
        n = fevent(set, fq, NULL);
        printf("watcher: fevent returned %zd.\n", n);

        return NULL;
}

int main(void)
{
        pthread_t       t[3];
        sigset_t        sigs;
        struct timespec t0;
        struct timespec t1;
        int             sig;
        int             i;

        sigemptyset(&sigs);
        sigaddset(&sigs, SIGINT);
        sigaddset(&sigs, SIGTERM);
        pthread_sigmask(SIG_BLOCK, &sigs, NULL);

        set = fset_create();
        fq  = fqueue_create();
        if (set == NULL || fq == NULL)
                return 1;

        pthread_create(&t[0], NULL, reader, NULL);
        pthread_create(&t[2], NULL, watcher, NULL);

        /* The acceptor starts once the reader has its flow. */
        pthread_mutex_lock(&lock);
        while (flow_fd < 0)
                pthread_cond_wait(&cond, &lock);
        pthread_mutex_unlock(&lock);
        pthread_create(&t[1], NULL, acceptor, NULL);

        printf("cancel server ready.\n");
        fflush(stdout);

        sigwait(&sigs, &sig);

        clock_gettime(CLOCK_MONOTONIC, &t0);
        for (i = 0; i < 3; ++i)
                pthread_cancel(t[i]);
        for (i = 0; i < 3; ++i)
                pthread_join(t[i], NULL);
        clock_gettime(CLOCK_MONOTONIC, &t1);

        printf("cancelled 3 threads in %ld ms.\n",
               (long) ((t1.tv_sec - t0.tv_sec) * 1000
                       + (t1.tv_nsec - t0.tv_nsec) / 1000000));

        flow_dealloc(flow_fd);
        fqueue_destroy(fq);
        fset_destroy(set);

        return 0;
}
