/*
 * constants: checks every constant, event bit, error number and qosspec_t
 * layout that the headers define against the table in docs/capi.md.
 *
 *     constants docs/capi.md
 *
 * Each table row "| NAME | VALUE | ..." must match the value the headers
 * give NAME, and every value below must have its row. Exit status 0 when
 * all match; every mismatch is printed.
 *
 * SPDX-License-Identifier: MIT OR Apache-2.0
 */

#define _POSIX_C_SOURCE 200809L

#include <ouroboros/dev.h>
#include <ouroboros/errno.h>
#include <ouroboros/fccntl.h>
#include <ouroboros/fqueue.h>
#include <ouroboros/hash.h>
#include <ouroboros/qos.h>
#include <ouroboros/time.h>
#include <ouroboros/version.h>

#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct constant {
        const char * name;
        long long    value;
        int          seen;
};

#define C(x) { #x, (long long) (x), 0 }
#define OFF(f) { "qosspec_t." #f, (long long) offsetof(qosspec_t, f), 0 }
#define CUBE(q, f) { #q "." #f, (long long) q.f, 0 }
#define CUBE_ALL(q) CUBE(q, delay), CUBE(q, bandwidth), CUBE(q, availability), \
        CUBE(q, loss), CUBE(q, ber), CUBE(q, in_order), CUBE(q, max_gap),     \
        CUBE(q, timeout)

int main(int argc, char ** argv)
{
        struct constant table[] = {
                C(ENOTALLOC), C(EIPCPTYPE), C(EIRMD), C(EIPCP),
                C(EIPCPSTATE), C(EFLOWDOWN), C(EFLOWPEER), C(ENAME),
                C(ECRYPT), C(EAUTH),
                C(FLOWFRDONLY), C(FLOWFWRONLY), C(FLOWFRDWR),
                C(FLOWFACCMODE), C(FLOWFDOWN), C(FLOWFRNOBLOCK),
                C(FLOWFWNOBLOCK), C(FLOWFNONBLOCK), C(FLOWFRNOPART),
                C(FLOWFWNOPART), C(FLOWFDEFAULT), C(FLOWFINVALID),
                C(FRCTFRESCNTRL), C(FRCTFRTX), C(FRCTFLINGER),
                C(FLOWSRCVTIMEO), C(FLOWGRCVTIMEO), C(FLOWSSNDTIMEO),
                C(FLOWGSNDTIMEO), C(FLOWGQOSSPEC), C(FLOWSFLAGS),
                C(FLOWGFLAGS), C(FLOWGRXQLEN), C(FLOWGTXQLEN),
                C(FRCTSFLAGS), C(FRCTGFLAGS),
                C(FLOW_PKT), C(FLOW_DOWN), C(FLOW_UP), C(FLOW_ALLOC),
                C(FLOW_DEALLOC), C(FLOW_PEER),
                C(HASH_CRC32), C(HASH_MD5), C(HASH_SHA3_224),
                C(HASH_SHA3_256), C(HASH_SHA3_384), C(HASH_SHA3_512),
                C(QOS_DEFAULT_TIMEOUT), C(MILLION), C(BILLION),
                C(OUROBOROS_VERSION_MAJOR), C(OUROBOROS_VERSION_MINOR),
                { "sizeof(qosspec_t)", (long long) sizeof(qosspec_t), 0 },
                OFF(delay), OFF(bandwidth), OFF(availability), OFF(loss),
                OFF(ber), OFF(in_order), OFF(max_gap), OFF(timeout),
                CUBE_ALL(qos_raw), CUBE_ALL(qos_raw_no_errors),
                CUBE_ALL(qos_best_effort), CUBE_ALL(qos_video),
                CUBE_ALL(qos_voice), CUBE_ALL(qos_data),
        };
        size_t n = sizeof(table) / sizeof(table[0]);
        char   line[1024];
        int    bad = 0;
        int    rows = 0;
        size_t i;
        FILE * f;

        if (argc != 2) {
                printf("Usage: constants docs/capi.md\n");
                return 2;
        }

        f = fopen(argv[1], "r");
        if (f == NULL) {
                printf("Cannot open %s.\n", argv[1]);
                return 2;
        }

        while (fgets(line, sizeof(line), f) != NULL) {
                char      name[128];
                char      value[64];
                char *    end;
                long long v;

                if (sscanf(line, "| `%127[A-Za-z0-9_.()]` | `%63[^`]`",
                           name, value) != 2)
                        continue;
                v = strtoll(value, &end, 0);
                if (*end != '\0') {
                        if (strcmp(value, "UINT32_MAX") == 0)
                                v = (long long) UINT32_MAX;
                        else if (strcmp(value, "UINT64_MAX") == 0)
                                v = (long long) UINT64_MAX;
                        else
                                continue;
                }
                ++rows;
                for (i = 0; i < n; ++i)
                        if (strcmp(table[i].name, name) == 0)
                                break;
                if (i == n) {
                        printf("table row %s: no such constant\n", name);
                        ++bad;
                        continue;
                }
                table[i].seen = 1;
                if (table[i].value != v) {
                        printf("%s: headers say %lld, table says %lld\n",
                               name, table[i].value, v);
                        ++bad;
                }
        }
        fclose(f);

        for (i = 0; i < n; ++i) {
                if (!table[i].seen) {
                        printf("%s = %lld: not in the table\n",
                               table[i].name, table[i].value);
                        ++bad;
                }
        }

        printf("constants: %zu known, %d table rows, %d mismatches\n",
               n, rows, bad);

        return bad == 0 && rows > 0 ? 0 : 1;
}
