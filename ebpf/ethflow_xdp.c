// SPDX-License-Identifier: MIT OR GPL-2.0
/*
 * ethflow's XDP program: the first filter of the `xdp` backend of ipcpd-eth.
 *
 * It runs on every frame the interface receives, before the kernel builds a
 * socket buffer for it (native mode) or right after (SKB mode):
 *
 *   - not our ethertype          -> XDP_PASS (the rest of the stack sees it)
 *   - our ethertype, other VLAN  -> XDP_PASS, count C_PASS_OTHER_VLAN (not our
 *     layer: untagged when we have a VLAN, tagged when we have none or another;
 *     802.1ad service tags never match)
 *   - for another MAC, or a
 *     broadcast but NAME_QUERY   -> drop, count C_DROP_NOT_FOR_US
 *   - too short, bad version,
 *     length beyond the frame    -> drop, count C_DROP_MALFORMED
 *   - management (type != DATA)  -> the AF_XDP socket of this rx queue; all
 *     but a peer's KEEP_ALIVE within a budget per sender MAC and CPU (token
 *     bucket), beyond it drop, count C_DROP_MGMT_BUDGET (the same budget as
 *     backend raw's, ipcpd-eth/src/segment.rs: it spares the IPCP a flood
 *     from one host). Keep-alives from a MAC in `peer_macs` (hosts this IPCP
 *     has flows with) are exempt, so a flood spoofing a peer's MAC cannot
 *     starve its liveness; keep-alives from any other MAC are budgeted, so a
 *     flood from random MACs does not reach the IPCP
 *   - DATA for a live endpoint   -> the AF_XDP socket of this rx queue
 *   - DATA for an unknown eid    -> drop, count C_DROP_UNKNOWN_EID; except a
 *     few per sender MAC and CPU (token bucket), which go up so the IPCP can answer
 *     UNKNOWN_EID and the sender learns its flow is gone (C_PASS_UNKNOWN_EID)
 *
 * The IPCP keeps `live_eids` in step with flow allocation. Keys are the 8
 * bytes of the destination eid exactly as they are on the wire (big endian),
 * so the program compares bytes and never swaps them.
 *
 * Frame layout (docs/wire.md): Ethernet header (14 bytes), then version u8,
 * type u8, payload length u16 BE, dst eid u64 BE, src eid u64 BE, payload.
 * With a VLAN, an 802.1Q tag sits between the source MAC and the ethertype;
 * the program takes it out (bpf_xdp_adjust_head) before the frame goes to the
 * socket, so the IPCP always sees an untagged frame, as with backend raw.
 *
 * The VLAN and address rules are those of ipcpd-eth/src/segment.rs (which
 * backend raw applies); keep the two in step.
 *
 * Two entry points with the same rules: `ethflow_xdp` (section "xdp") for
 * MTUs whose frames fit one buffer, `ethflow_xdp_frags` (section
 * "xdp.frags") for larger ones (docs/decisions/0042-xdp-multi-buffer.md).
 *
 * Built by ipcpd-eth/build.rs with clang -O2 -g -target bpf; loaded by aya.
 * No libbpf headers: the few helper declarations are below.
 */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/types.h>

#define SEC(name) __attribute__((section(name), used))
#define __uint(name, val) int(*name)[val]
#define __type(name, val) typeof(val) *name

/* Helper calls: the number is the helper's id in the kernel's ABI. */
static void *(*bpf_map_lookup_elem)(void *map, const void *key) = (void *)BPF_FUNC_map_lookup_elem;
static long (*bpf_redirect_map)(void *map, __u64 key, __u64 flags) = (void *)BPF_FUNC_redirect_map;
static __u64 (*bpf_ktime_get_coarse_ns)(void) = (void *)BPF_FUNC_ktime_get_coarse_ns;
static long (*bpf_xdp_adjust_head)(struct xdp_md *ctx, int delta) = (void *)BPF_FUNC_xdp_adjust_head;
static __u64 (*bpf_xdp_get_buff_len)(struct xdp_md *ctx) = (void *)BPF_FUNC_xdp_get_buff_len;

/* Set by the loader before the program is loaded (aya override_global). */
volatile const __u16 ethertype = 0x88B5;		/* host byte order */
volatile const __u32 unknown_eid_burst = 10;		/* frames per sender MAC ... */
volatile const __u64 unknown_eid_refill_ns = 10000000; /* ... plus one per this */
volatile const __u32 mgmt_burst = 1024;			/* management frames per sender MAC ... */
volatile const __u64 mgmt_refill_ns = 100000;		/* ... plus one per this */
/* Our MAC: its 6 bytes in memory order, then two zero bytes. */
volatile const __u64 our_mac = 0;
/* Our 802.1Q VLAN id; 0 = untagged frames only. */
volatile const __u16 vlan_id = 0;

#define ETHFLOW_VERSION 2 /* docs/wire.md; keep equal to ipcpd_eth::wire::VERSION */
#define TYPE_DATA 0
#define TYPE_NAME_QUERY 1
#define TYPE_KEEP_ALIVE 7
#define TPID_8021Q 0x8100
#define TPID_8021AD 0x88A8
#define VLAN_HLEN 4

/* Indices into `counters`; the loader reads them by the same numbers. */
enum {
	C_DROP_UNKNOWN_EID = 0,
	C_DROP_MALFORMED = 1,
	C_PASS_UNKNOWN_EID = 2,
	C_REDIRECT_DATA = 3,
	C_REDIRECT_MGMT = 4,
	C_DROP_NO_SOCKET = 5,
	C_DROP_NOT_FOR_US = 6,
	C_PASS_OTHER_VLAN = 7,
	C_DROP_MGMT_BUDGET = 8,
	C_COUNT = 9,
};

struct vlan_tag {
	__be16 tci;
	__be16 proto;
} __attribute__((packed));

struct ethflow_hdr {
	__u8 version;
	__u8 type;
	__be16 len;
	__u8 dst[8];
	__u8 src[8];
} __attribute__((packed));

/* A sender's budget of unknown-eid frames passed up to the IPCP. */
struct limiter {
	__u64 refilled_ns;
	__u32 tokens;
	__u32 pad;
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, __u64);
	__type(value, __u8);
	__uint(max_entries, 1 << 20);
	/* Flows come and go one at a time: allocate entries on insert. */
	__uint(map_flags, BPF_F_NO_PREALLOC);
} live_eids SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, __u32);
	__type(value, __u64);
	__uint(max_entries, C_COUNT);
} counters SEC(".maps");

/* MACs of the hosts this IPCP has flows with: 6 bytes read into a zeroed u64,
 * as `our_mac`. Kept by the IPCP from its allocator's peer table. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, __u64);
	__type(value, __u8);
	__uint(max_entries, 4096);
	__uint(map_flags, BPF_F_NO_PREALLOC);
} peer_macs SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_XSKMAP);
	__type(key, __u32);
	__type(value, __u32);
	__uint(max_entries, 64); /* the loader sets it to the rx queue count */
} xsks SEC(".maps");

/*
 * Budgets per CPU and per hash of the sender MAC: an array lookup, no hash
 * map to update under a flood, no cache line shared between CPUs. MACs that
 * share a slot share its budget, which only ever passes fewer frames.
 */
#define LIMITER_SLOTS 256

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, __u32);
	__type(value, struct limiter);
	__uint(max_entries, LIMITER_SLOTS);
} unknown_eid_limiters SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, __u32);
	__type(value, struct limiter);
	__uint(max_entries, LIMITER_SLOTS);
} mgmt_limiters SEC(".maps");

static __attribute__((always_inline)) void count(__u32 idx)
{
	__u64 *c = bpf_map_lookup_elem(&counters, &idx);

	if (c)
		*c += 1; /* per CPU: no atomics needed */
}

static __attribute__((always_inline)) int drop(__u32 idx)
{
	count(idx);
	return XDP_DROP;
}

/* To the AF_XDP socket bound to the queue the frame came in on. */
static __attribute__((always_inline)) int to_socket(struct xdp_md *ctx, __u32 idx)
{
	/* The low bits of flags are the action when the queue has no socket. */
	if (bpf_redirect_map(&xsks, ctx->rx_queue_index, XDP_DROP) != XDP_REDIRECT)
		return drop(C_DROP_NO_SOCKET);
	count(idx);
	return XDP_REDIRECT;
}

/*
 * Token bucket per sender MAC (slot) in `limiters`, the same shape as the
 * flow allocator's limiters. The coarse clock (a tick, a few ms) is fine
 * for these refill intervals and costs far less than the precise one.
 */
/* A peer's keep-alive: exempt from the management budget. */
static __attribute__((always_inline)) int peer_keepalive(const struct ethhdr *eth, __u8 type)
{
	__u64 src = 0;

	if (type != TYPE_KEEP_ALIVE)
		return 0;
	__builtin_memcpy(&src, eth->h_source, ETH_ALEN);
	return bpf_map_lookup_elem(&peer_macs, &src) != 0;
}

static __attribute__((always_inline)) int may_pass(void *limiters, const __u8 *mac, __u32 burst,
						    __u64 refill_ns)
{
	__u64 key = 0;
	__u32 slot;
	struct limiter *l;
	__u64 now, earned;
	__u32 room;

	__builtin_memcpy(&key, mac, ETH_ALEN);
	slot = (key * 0x9E3779B97F4A7C15ULL) >> 56; /* Fibonacci hash: 0..255 */
	l = bpf_map_lookup_elem(limiters, &slot);
	if (!l)
		return 0;
	now = bpf_ktime_get_coarse_ns();
	if (l->refilled_ns == 0) {
		/* First frame of this slot on this CPU: a full bucket. */
		l->refilled_ns = now;
		l->tokens = burst;
	}
	earned = (now - l->refilled_ns) / refill_ns;
	room = burst - l->tokens;
	if (earned >= room) {
		l->tokens = burst;
		l->refilled_ns = now;
	} else if (earned > 0) {
		l->tokens += earned;
		l->refilled_ns += earned * refill_ns;
	}
	if (l->tokens == 0)
		return 0;
	l->tokens -= 1;
	return 1;
}

/*
 * Take the 802.1Q tag out: move the two MACs 4 bytes up and start the frame
 * there. Returns 0 on success; the caller must re-read data and data_end.
 */
static __attribute__((always_inline)) int pop_vlan_tag(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	__u8 macs[2 * ETH_ALEN];

	if (data + 2 * ETH_ALEN + VLAN_HLEN > data_end)
		return -1;
	__builtin_memcpy(macs, data, sizeof(macs));
	__builtin_memcpy(data + VLAN_HLEN, macs, sizeof(macs));
	return bpf_xdp_adjust_head(ctx, VLAN_HLEN) ? -1 : 0;
}

/*
 * The filter, for both entry points. `frags`: the frame may continue past
 * data_end in fragments (a multi-buffer frame, MTU above one page); the
 * headers are still read from the linear part only (the drivers we run on,
 * veth and the generic path, keep well over a page of it), and only the
 * length check needs the whole frame's length.
 */
static __attribute__((always_inline)) int filter(struct xdp_md *ctx, int frags)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	struct vlan_tag *tag;
	struct ethflow_hdr *h;
	__u64 frame_len, dst, dst_mac = 0;
	__be16 proto;
	__u16 vid = 0;
	int tagged = 0;

	if ((void *)(eth + 1) > data_end)
		return XDP_PASS; /* not even Ethernet: not ours to judge */
	proto = eth->h_proto;
	if (proto == __builtin_bswap16(TPID_8021Q) || proto == __builtin_bswap16(TPID_8021AD)) {
		tag = (void *)(eth + 1);
		if ((void *)(tag + 1) > data_end)
			return XDP_PASS;
		if (tag->proto != __builtin_bswap16(ethertype))
			return XDP_PASS;
		/* Ours by type: a service tag never matches; VLAN id 0 is a
		 * priority tag on the untagged network. */
		if (proto == __builtin_bswap16(TPID_8021AD))
			vid = 0xFFFF;
		else
			vid = __builtin_bswap16(tag->tci) & 0x0FFF;
		tagged = 1;
	} else if (proto != __builtin_bswap16(ethertype)) {
		return XDP_PASS;
	}
	if (vid != vlan_id) {
		count(C_PASS_OTHER_VLAN);
		return XDP_PASS;
	}
	if (tagged) {
		if (pop_vlan_tag(ctx))
			return drop(C_DROP_MALFORMED);
		data = (void *)(long)ctx->data;
		data_end = (void *)(long)ctx->data_end;
		eth = data;
		if ((void *)(eth + 1) > data_end)
			return drop(C_DROP_MALFORMED);
	}

	h = (void *)(eth + 1);
	/* Addressed to us, or a broadcast NAME_QUERY; the rest is not for us. */
	__builtin_memcpy(&dst_mac, eth->h_dest, ETH_ALEN);
	if (dst_mac != our_mac) {
		if (dst_mac != 0xFFFFFFFFFFFFULL || (void *)&h->type + 1 > data_end ||
		    h->type != TYPE_NAME_QUERY)
			return drop(C_DROP_NOT_FOR_US);
	}
	if ((void *)(h + 1) > data_end || h->version != ETHFLOW_VERSION)
		return drop(C_DROP_MALFORMED);
	/* Ethernet pads short frames, so the frame may be longer; never shorter. */
	frame_len = frags ? bpf_xdp_get_buff_len(ctx) : (__u64)(data_end - data);
	if (sizeof(*eth) + sizeof(*h) + __builtin_bswap16(h->len) > frame_len)
		return drop(C_DROP_MALFORMED);

	/* Management frames never meet the live-endpoint filter: allocation,
	 * keep-alives and deallocation must get through whatever else floods. */
	if (h->type != TYPE_DATA) {
		if (!peer_keepalive(eth, h->type) &&
		    !may_pass(&mgmt_limiters, eth->h_source, mgmt_burst, mgmt_refill_ns))
			return drop(C_DROP_MGMT_BUDGET);
		return to_socket(ctx, C_REDIRECT_MGMT);
	}

	__builtin_memcpy(&dst, h->dst, sizeof(dst));
	if (bpf_map_lookup_elem(&live_eids, &dst))
		return to_socket(ctx, C_REDIRECT_DATA);
	if (may_pass(&unknown_eid_limiters, eth->h_source, unknown_eid_burst, unknown_eid_refill_ns))
		return to_socket(ctx, C_PASS_UNKNOWN_EID);
	return drop(C_DROP_UNKNOWN_EID);
}

/* Frames that fit one page: the single-buffer program (MTU up to 3826). */
SEC("xdp")
int ethflow_xdp(struct xdp_md *ctx)
{
	return filter(ctx, 0);
}

/*
 * Loaded instead when the MTU needs multi-buffer frames (BPF_F_XDP_HAS_FRAGS:
 * the driver may hand it a frame in several buffers; veth then takes native
 * mode above its single-page MTU limit). The AF_XDP socket must be bound
 * with XDP_USE_SG to receive such frames.
 */
SEC("xdp.frags")
int ethflow_xdp_frags(struct xdp_md *ctx)
{
	return filter(ctx, 1);
}

char _license[] SEC("license") = "Dual MIT/GPL";
