/*
 * oecho: echo client and server on the Ouroboros application API, in the
 * style of the model's tool. Built against ethflow's libouroboros-dev:
 *
 *     cc oecho.c $(pkg-config --cflags --libs ouroboros-dev) -o oecho
 *
 * Server (-l): accepts a flow, echoes one SDU, deallocates, and again.
 * Client: sends a message, prints the reply, then reads once more: the
 * server has deallocated, so that read fails at once with -EFLOWDOWN
 * (-1005) instead of blocking (the problem ethflow solves). -1 skips the
 * second read; -d prints how long it took, in microseconds, on stderr.
 *
 * SPDX-License-Identifier: MIT OR Apache-2.0
 */

#define _POSIX_C_SOURCE 200809L

#include <ouroboros/dev.h>
#include <ouroboros/errno.h>

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define BUF_SIZE 2048

static void usage(void)
{
        printf("Usage: oecho [OPTION]...\n"
               "Sends an echo to a server or runs one.\n\n"
               "  -l      run as server\n"
               "  -n NAME name to allocate a flow to (default oecho)\n"
               "  -m MSG  message to send (default \"Client says hi!\")\n"
               "  -1      client: read only the reply\n"
               "  -d      client: print the second read's duration (us) on stderr\n"
               "  -w      client: after the second read, try a write\n"
               "  -t MS   client: the flow's liveness timeout (qos timeout)\n"
               "  -h      this help\n");
}

static int server_main(void)
{
        char    buf[BUF_SIZE];
        ssize_t count;
        int     fd;

        printf("Starting the server.\n");
        fflush(stdout);

        while (true) {
                fd = flow_accept(NULL, NULL);
                if (fd < 0) {
                        printf("Failed to accept flow: %d.\n", fd);
                        break;
                }

                printf("New flow.\n");

                count = flow_read(fd, buf, BUF_SIZE);
                if (count < 0) {
                        printf("Failed to read packet: %zd.\n", count);
                        flow_dealloc(fd);
                        continue;
                }

                printf("Message from client is %.*s.\n", (int) count, buf);
                fflush(stdout);

                if (flow_write(fd, buf, count) < 0)
                        printf("Failed to write packet.\n");

                flow_dealloc(fd);
        }

        return 1;
}

static long elapsed_us(const struct timespec * a, const struct timespec * b)
{
        return (b->tv_sec - a->tv_sec) * 1000000L
                + (b->tv_nsec - a->tv_nsec) / 1000L;
}

static int client_main(const char * name, const char * message,
                       bool once, bool timing, bool write_after,
                       long timeout_ms)
{
        char            buf[BUF_SIZE];
        ssize_t         count;
        int             fd;
        qosspec_t       qs = qos_raw;
        struct timespec t0;
        struct timespec t1;

        if (timeout_ms > 0)
                qs.timeout = (uint32_t) timeout_ms;

        fd = flow_alloc(name, &qs, NULL);
        if (fd < 0) {
                printf("Failed to allocate flow: %d.\n", fd);
                return 1;
        }

        if (flow_write(fd, message, strlen(message)) < 0) {
                printf("Failed to write packet.\n");
                flow_dealloc(fd);
                return 1;
        }

        count = flow_read(fd, buf, BUF_SIZE);
        if (count < 0) {
                printf("Failed to read packet: %zd.\n", count);
                flow_dealloc(fd);
                return 1;
        }

        printf("Server replied with %.*s\n", (int) count, buf);
        fflush(stdout);

        if (!once) {
                clock_gettime(CLOCK_MONOTONIC, &t0);
                count = flow_read(fd, buf, BUF_SIZE);
                clock_gettime(CLOCK_MONOTONIC, &t1);
                if (count < 0)
                        printf("Failed to read packet: %zd.\n", count);
                else
                        printf("Second reply of %zd bytes.\n", count);
                if (timing)
                        fprintf(stderr, "second_read_us=%ld\n",
                                elapsed_us(&t0, &t1));
                if (write_after)
                        printf("Write after the read: %zd.\n",
                               flow_write(fd, message, strlen(message)));
        }

        flow_dealloc(fd);

        return 0;
}

int main(int argc, char ** argv)
{
        const char * name    = "oecho";
        const char * message = "Client says hi!";
        bool         server  = false;
        bool         once    = false;
        bool         timing  = false;
        bool         write_after = false;
        long         timeout_ms = 0;
        int          c;

        while ((c = getopt(argc, argv, "ln:m:1dwt:h")) != -1) {
                switch (c) {
                case 'l':
                        server = true;
                        break;
                case 'n':
                        name = optarg;
                        break;
                case 'm':
                        message = optarg;
                        break;
                case '1':
                        once = true;
                        break;
                case 'd':
                        timing = true;
                        break;
                case 'w':
                        write_after = true;
                        break;
                case 't':
                        timeout_ms = atol(optarg);
                        break;
                case 'h':
                        usage();
                        return 0;
                default:
                        usage();
                        return 2;
                }
        }

        if (server)
                return server_main();

        return client_main(name, message, once, timing, write_after,
                           timeout_ms);
}
