/*
 * ping: round trips over a flow, with the fccntl settings a real client
 * uses: a receive timeout (FLOWSRCVTIMEO) so a lost reply never blocks it,
 * and FLOWFRNOPART so a reply that does not fit is an error, not a part.
 *
 * Server (-l): accepts flows (one thread each) and echoes every SDU.
 * Client: sends -c SDUs of -s bytes, one every -i ms, waits -w ms for
 * each reply, and prints a summary like the model's oping.
 * Probe (-p): checks fccntl's behaviour on a flow to a ping server and
 * prints one "check NAME ret=R ..." line per check (used by the tests).
 *
 * SPDX-License-Identifier: MIT OR Apache-2.0
 */

#define _POSIX_C_SOURCE 200809L

#include <ouroboros/dev.h>
#include <ouroboros/errno.h>
#include <ouroboros/fccntl.h>

#include <pthread.h>
#include <sys/wait.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define BUF_SIZE 4096

struct ping_hdr {
        uint32_t seqno;
        uint32_t pad;
        int64_t  sent_ns;
};

static int64_t now_ns(void)
{
        struct timespec t;

        clock_gettime(CLOCK_MONOTONIC, &t);

        return (int64_t) t.tv_sec * 1000000000LL + t.tv_nsec;
}

static void * serve_flow(void * arg)
{
        int     fd = (int) (intptr_t) arg;
        char    buf[BUF_SIZE];
        ssize_t n;

        while ((n = flow_read(fd, buf, sizeof(buf))) >= 0)
                if (n > 0 && flow_write(fd, buf, n) < 0)
                        break;

        printf("Flow %d ended: %zd.\n", fd, n);
        fflush(stdout);
        flow_dealloc(fd);

        return NULL;
}

static int server_main(void)
{
        pthread_t t;
        int       fd;

        printf("Ping server started.\n");
        fflush(stdout);

        while ((fd = flow_accept(NULL, NULL)) >= 0) {
                printf("New flow %d.\n", fd);
                fflush(stdout);
                if (pthread_create(&t, NULL, serve_flow,
                                   (void *) (intptr_t) fd)) {
                        flow_dealloc(fd);
                        continue;
                }
                pthread_detach(t);
        }

        printf("Failed to accept flow: %d.\n", fd);

        return 1;
}

static int client_main(const char * name, int count, int size,
                       int interval_ms, int wait_ms)
{
        char            buf[BUF_SIZE];
        struct timespec timeo = { wait_ms / 1000, (wait_ms % 1000) * 1000000L };
        struct timespec gap = { interval_ms / 1000,
                                (interval_ms % 1000) * 1000000L };
        struct ping_hdr h;
        qosspec_t       qs = qos_raw;
        double          sum_ms = 0;
        int             received = 0;
        int             fd;
        int             i;

        if (size < (int) sizeof(h) || size > BUF_SIZE)
                size = sizeof(h);

        fd = flow_alloc(name, &qs, NULL);
        if (fd < 0) {
                printf("Failed to allocate flow: %d.\n", fd);
                return 1;
        }

        if (fccntl(fd, FLOWSRCVTIMEO, &timeo) ||
            fccntl(fd, FLOWSFLAGS, FLOWFRDWR | FLOWFRNOPART)) {
                printf("Failed to set flow options.\n");
                flow_dealloc(fd);
                return 1;
        }

        memset(buf, 0, sizeof(buf));
        for (i = 0; i < count; ++i) {
                ssize_t n;

                h.seqno   = (uint32_t) i;
                h.pad     = 0;
                h.sent_ns = now_ns();
                memcpy(buf, &h, sizeof(h));
                if (flow_write(fd, buf, size) < 0) {
                        printf("Failed to send SDU %d.\n", i);
                        break;
                }
                n = flow_read(fd, buf, sizeof(buf));
                if (n == -ETIMEDOUT) {
                        printf("SDU %d timed out.\n", i);
                } else if (n < (ssize_t) sizeof(h)) {
                        printf("Failed to read SDU %d: %zd.\n", i, n);
                        break;
                } else {
                        double ms;

                        memcpy(&h, buf, sizeof(h));
                        ms = (now_ns() - h.sent_ns) / 1e6;
                        printf("%zd bytes from %s: seq=%u time=%.3f ms\n",
                               n, name, h.seqno, ms);
                        sum_ms += ms;
                        ++received;
                }
                if (i + 1 < count)
                        nanosleep(&gap, NULL);
        }

        printf("--- %s ping statistics ---\n", name);
        printf("%d SDUs transmitted, %d received, avg %.3f ms\n", i, received,
               received > 0 ? sum_ms / received : 0.0);

        flow_dealloc(fd);

        return received == count ? 0 : 1;
}

static double ms_since(int64_t t0)
{
        return (now_ns() - t0) / 1e6;
}

struct blocked {
        int     fd;
        ssize_t ret;
};

static void * blocked_read(void * arg)
{
        struct blocked * b = arg;
        char             buf[64];

        b->ret = flow_read(b->fd, buf, sizeof(buf));

        return NULL;
}

/* Each check prints one line; the tests read them. */
static int probe_main(const char * name, int wait_ms)
{
        char            big[100];
        char            small[10];
        struct timespec timeo = { wait_ms / 1000, (wait_ms % 1000) * 1000000L };
        struct timespec got = { 0, 0 };
        qosspec_t       qs = qos_raw;
        uint32_t        flags = 0;
        size_t          qlen = 99;
        int64_t         t0;
        ssize_t         n;
        int             fd;
        int             r;
        int             parts;
        pid_t           pid;

        fd = flow_alloc(name, &qs, NULL);
        if (fd < 0) {
                printf("Failed to allocate flow: %d.\n", fd);
                return 1;
        }

        r = fccntl(fd, FLOWGRCVTIMEO, &got);
        printf("check get_unset_timeout ret=%d\n", r);

        r = fccntl(fd, FLOWSRCVTIMEO, &timeo);
        fccntl(fd, FLOWGRCVTIMEO, &got);
        printf("check set_timeout ret=%d sec=%ld nsec=%ld\n", r,
               (long) got.tv_sec, got.tv_nsec);

        /* Nothing was sent: the read must give up after the timeout. */
        t0 = now_ns();
        n = flow_read(fd, big, sizeof(big));
        printf("check read_timeout ret=%zd ms=%.1f\n", n, ms_since(t0));

        fccntl(fd, FLOWGFLAGS, &flags);
        printf("check default_flags flags=%o\n", flags);

        r = fccntl(fd, FLOWSFLAGS, FLOWFRDWR | FLOWFRNOBLOCK);
        t0 = now_ns();
        n = flow_read(fd, big, sizeof(big));
        printf("check read_nonblock ret=%zd set=%d ms=%.1f\n", n, r,
               ms_since(t0));

        r = fccntl(fd, FLOWSFLAGS, FLOWFWRONLY | FLOWFRDWR);
        printf("check invalid_flags ret=%d\n", r);

        r = fccntl(fd, FLOWGQOSSPEC, &qs);
        printf("check qosspec ret=%d timeout=%u\n", r, qs.timeout);

        r = fccntl(fd, 0777, &qs);
        printf("check unknown_cmd ret=%d\n", r);

        /* No partial reads: an echo larger than the buffer is refused. */
        fccntl(fd, FLOWSFLAGS, FLOWFRDWR | FLOWFRNOPART);
        memset(big, 'x', sizeof(big));
        flow_write(fd, big, sizeof(big));
        n = flow_read(fd, small, sizeof(small));
        printf("check nopart ret=%zd\n", n);

        /* Partial reads (the default): the echo comes in parts, then 0. */
        fccntl(fd, FLOWSFLAGS, FLOWFDEFAULT);
        flow_write(fd, big, sizeof(big));
        parts = 0;
        while ((n = flow_read(fd, small, sizeof(small))) == sizeof(small))
                ++parts;
        printf("check partial parts=%d last=%zd\n", parts, n);

        r = fccntl(fd, FLOWGRXQLEN, &qlen);
        printf("check rxqlen ret=%d qlen=%zu\n", r, qlen);

        r = flow_write(fd, big, 0x10000);
        printf("check oversize_write ret=%d\n", r);

        r = fccntl(fd, FLOWSFLAGS, FLOWFRDONLY);
        n = flow_write(fd, big, 1);
        printf("check write_rdonly ret=%zd\n", n);

        /* fork: the child cannot use the parent's flow nor open one; the
         * parent's flow is untouched. */
        fccntl(fd, FLOWSFLAGS, FLOWFDEFAULT);
        fflush(stdout);
        pid = fork();
        if (pid == 0) {
                struct timespec zero = { 0, 0 };

                n = flow_write(fd, big, 1);
                r = flow_alloc(name, NULL, &zero);
                printf("check fork_child write=%zd alloc=%d\n", n, r);
                fflush(stdout);
                _exit(0);
        }
        waitpid(pid, NULL, 0);
        flow_write(fd, big, 5);
        n = flow_read(fd, big, sizeof(big));
        printf("check fork_parent ret=%zd\n", n);

        /* Deallocating wakes a thread blocked reading the flow. */
        {
                struct timespec pause = { 0, 100 * 1000000L };
                struct blocked  b = { fd, 0 };
                pthread_t       t;

                fccntl(fd, FLOWSRCVTIMEO, NULL);
                pthread_create(&t, NULL, blocked_read, &b);
                nanosleep(&pause, NULL);
                t0 = now_ns();
                r = flow_dealloc(fd);
                printf("check dealloc ret=%d\n", r);
                pthread_join(t, NULL);
                printf("check dealloc_wakes_reader ret=%zd ms=%.1f\n", b.ret,
                       ms_since(t0));
        }
        n = flow_read(fd, big, sizeof(big));
        printf("check read_after_dealloc ret=%zd\n", n);
        n = flow_read(-1, big, sizeof(big));
        printf("check read_bad_fd ret=%zd\n", n);
        r = flow_join("bc", NULL);
        printf("check join ret=%d\n", r);

        return 0;
}

int main(int argc, char ** argv)
{
        const char * name = "oping";
        bool         server = false;
        bool         probe = false;
        int          count = 3;
        int          size = 64;
        int          interval = 100;
        int          wait = 1000;
        int          c;

        while ((c = getopt(argc, argv, "lpn:c:s:i:w:")) != -1) {
                switch (c) {
                case 'l':
                        server = true;
                        break;
                case 'p':
                        probe = true;
                        break;
                case 'n':
                        name = optarg;
                        break;
                case 'c':
                        count = atoi(optarg);
                        break;
                case 's':
                        size = atoi(optarg);
                        break;
                case 'i':
                        interval = atoi(optarg);
                        break;
                case 'w':
                        wait = atoi(optarg);
                        break;
                default:
                        printf("Usage: ping [-l] [-p] [-n NAME] [-c COUNT] "
                               "[-s SIZE] [-i MS] [-w MS]\n");
                        return 2;
                }
        }

        if (server)
                return server_main();
        if (probe)
                return probe_main(name, wait);

        return client_main(name, count, size, interval, wait);
}
