// SPDX-License-Identifier: (GPL-2.0 OR BSD-3-Clause)
/*
 * kpiflow probes: life-cycle events of every TCP connection, each with a snapshot of the
 * kernel's own per-socket counters. Nothing here runs per packet on a healthy connection:
 * the hooks are connection set-up, state changes, retransmission timeouts, congestion-state
 * changes, drops and resets. The per-packet program at the end is opt-in (overhead baseline
 * and out-of-order distance) and is not attached by default.
 */
#include "vmlinux.h"
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include "kpiflow-event.h"

#define AF_INET 2
#define AF_INET6 10
#define SOL_TCP 6

char LICENSE[] SEC("license") = "Dual BSD/GPL";

/* Knobs, set by the loader before load. */
/* Only sockets of this network namespace (inode number); 0 = every namespace. */
const volatile __u32 kf_netns_filter = 0;
/* State events from sockops STATE_CB instead of tp_btf/inet_sock_set_state (kernels without it). */
const volatile bool kf_state_via_sockops = false;
/* The iterator turns on RTO/state callbacks for sockets opened before the agent started. */
const volatile bool kf_iter_enable_callbacks = true;

/*
 * Never read by the programs: it puts the enums of kpiflow-event.h into the object's BTF, where
 * the decoder's layout test compares them with agent/probe-event-decoder.ts.
 */
struct kf_btf_anchor {
	enum kf_event_kind kind;
	enum kf_missing_bit missing;
	enum kf_event_flag flag;
	enum kf_stat stat;
};
const struct kf_btf_anchor kf_btf_anchor = {};

/*
 * The callbacks kpiflow needs on each socket: never RTT_CB or other per-packet ones. STATE_CB
 * only in the fallback mode: with the tracepoint each state change would run sockops for nothing.
 */
#define KF_CB_FLAGS \
	(BPF_SOCK_OPS_RTO_CB_FLAG | (kf_state_via_sockops ? BPF_SOCK_OPS_STATE_CB_FLAG : 0))

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 4 << 20);
} kf_events SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, KF_STAT_MAX);
	__type(key, __u32);
	__type(value, __u64);
} kf_stats SEC(".maps");

/* Per-socket state: the ancillary counters events carry, and what the kernel forgets too early. */
struct kf_sk_state {
	struct kf_ancillary anc;
	/* The ports: the kernel zeroes them when the socket closes, before its last events. */
	__u16 sport;
	__u16 dport;
	/* The close (a state change to CLOSE) reached the ring: its destroy has nothing to add. */
	__u8 close_sent;
	__u8 _pad[3];
};

struct {
	__uint(type, BPF_MAP_TYPE_SK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct kf_sk_state);
} kf_sk SEC(".maps");

/* A passive open's SYN time, keyed by its 4-tuple until the handshake completes. */
struct kf_syn_key {
	__u64 netns_cookie;
	__u32 laddr[4];
	__u32 raddr[4];
	__u32 lport;
	__u32 rport;
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, struct kf_syn_key);
	__type(value, __u64);
} kf_syn_rx SEC(".maps");

/*
 * MPTCP connection state the probes keep themselves, keyed by the connection's local key: the
 * meta socket is not a tcp_sock, and tracing programs reach it only through an untrusted
 * pointer, which socket storage refuses. Touched only on RTOs of MPTCP subflows; LRU-bounded.
 */
struct kf_msk_state {
	__u32 hol_stalls;
	/* Segments reinjected by the MPTCP retransmission path (MPTcpExtMPTCPRetrans's). */
	__u32 reinj_segs;
	/* Data moved to the connection's out-of-order queue (MPTcpExtOFOQueue's). */
	__u32 ofo_segs;
	__u32 _pad;
	/* The data sequence number last judged, per subflow (id & 3): judge each one once. */
	__u64 ofo_seen[4];
	/* Per subflow, data judged when it moves (0: none), see kf_mptcp_data_avail. */
	__u64 ofo_pending[4];
	/* ... how many buffers it takes, ... */
	__u32 ofo_pending_run[4];
	/* ... the subflow's copied_seq then (the data moved once it changed), ... */
	__u32 ofo_pending_copied[4];
	/* ... the subflow (an address, read only through probe reads), ... */
	__u64 ofo_pending_ssk[4];
	/* ... and the connection (likewise), whose ack_seq judges it. */
	__u64 ofo_msk;
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, __u64);
	__type(value, struct kf_msk_state);
} kf_msk SEC(".maps");

/*
 * The connections (kf_msk keys, 0: free) with data judged when it moves: every check of every
 * subflow looks at them (kf_ofo_judge_all), as the check right after the move may name no socket.
 * Judgements wait only while an application holds its socket: few at once. When full, a
 * judgement is made at its connection's next check that names a socket.
 */
#define KF_OFO_WAIT 8

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, KF_OFO_WAIT);
	__type(key, __u32);
	__type(value, __u64);
} kf_ofo_wait SEC(".maps");

/*
 * The MPTCP connection a task last scheduled data for (mptcp_subflow_get_send), as an address:
 * the reinjection hook names no socket. Only a hint: checked against the segment's data
 * sequence number before use. Freed with the task.
 */
struct {
	__uint(type, BPF_MAP_TYPE_TASK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, __u64);
} kf_task_msk SEC(".maps");

/* The MPTCP worker (retransmission timer's work), to recognise it on a kworker. */
extern const void mptcp_worker __ksym __weak;

/*
 * Where __mptcp_retrans (the MPTCP retransmission path, static) lies in the kernel's text, from
 * /proc/kallsyms: its calls to mptcp_sendmsg_frag are the reinjections MPTcpExtMPTCPRetrans
 * counts (the direct calls only: it also pushes data through subflows it releases).
 * 0: unknown, reinjected segments are not counted.
 */
const volatile __u64 kf_retrans_lo = 0;
const volatile __u64 kf_retrans_hi = 0;
/* Where mptcp_sendmsg_frag lies: the frame after its own is its caller. */
const volatile __u64 kf_frag_lo = 0;
const volatile __u64 kf_frag_hi = 0;

/* The MPTCP connection snapshot the iterator writes after a subflow's (not on its stack). */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct kf_event);
} kf_iter_scratch SEC(".maps");

/* Scratch space of the per-packet program (too big for its stack next to other locals). */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct kf_event);
} kf_scratch SEC(".maps");

static __always_inline void kf_stat_add(__u32 idx, __u64 n)
{
	__u64 *v = bpf_map_lookup_elem(&kf_stats, &idx);

	if (v)
		*v += n; /* per-CPU slot: no atomics needed */
}

static __always_inline __u32 kf_netns(const struct sock *sk)
{
	return BPF_CORE_READ(sk, __sk_common.skc_net.net, ns.inum);
}

/* True when the netns filter lets this socket through. */
static __always_inline bool kf_netns_ok(const struct sock *sk)
{
	return !kf_netns_filter || kf_netns(sk) == kf_netns_filter;
}

/* True for a full TCP socket (not a listener, request or timewait mini-socket). */
static __always_inline bool kf_tcp_fullsock(const struct sock *sk)
{
	__u8 state;

	if (!sk)
		return false;
	/* skc_state is in sock_common, which every kind of socket has: read it first. */
	state = BPF_CORE_READ(sk, __sk_common.skc_state);
	if (state == TCP_TIME_WAIT || state == TCP_NEW_SYN_RECV || state == TCP_LISTEN)
		return false;
	return BPF_CORE_READ_BITFIELD_PROBED(sk, sk_protocol) == IPPROTO_TCP;
}

static __always_inline bool kf_v4mapped(const __u32 *a)
{
	return a[0] == 0 && a[1] == 0 && a[2] == bpf_htonl(0x0000ffff);
}

/* Addresses, ports, namespace and state of any inet socket (a TCP one, or an MPTCP one). */
static __always_inline void kf_fill_addresses(struct kf_event *e, const struct sock *sk)
{
	__u16 family = BPF_CORE_READ(sk, __sk_common.skc_family);
	__u32 s6[4], d6[4];

	e->ip_version = 4;
	if (family == AF_INET6) {
		BPF_CORE_READ_INTO(&s6, sk, __sk_common.skc_v6_rcv_saddr.in6_u.u6_addr32);
		BPF_CORE_READ_INTO(&d6, sk, __sk_common.skc_v6_daddr.in6_u.u6_addr32);
		if (!kf_v4mapped(d6)) {
			e->ip_version = 6;
			__builtin_memcpy(e->saddr, s6, 16);
			__builtin_memcpy(e->daddr, d6, 16);
		}
	}
	if (e->ip_version == 4) {
		/* Also right for v4-mapped IPv6 sockets: the kernel keeps the IPv4 pair here. */
		BPF_CORE_READ_INTO((__u32 *)e->saddr, sk, __sk_common.skc_rcv_saddr);
		BPF_CORE_READ_INTO((__u32 *)e->daddr, sk, __sk_common.skc_daddr);
	}
	e->sport = BPF_CORE_READ(sk, __sk_common.skc_num);
	e->dport = bpf_ntohs(BPF_CORE_READ(sk, __sk_common.skc_dport));
	e->netns = kf_netns(sk);
	e->tcp_state = BPF_CORE_READ(sk, __sk_common.skc_state);
}

/* The MPTCP connection (meta socket) of a subflow, or NULL. */
static __always_inline const struct mptcp_sock *kf_msk_of(const struct sock *ssk)
{
	const struct inet_connection_sock *icsk = (const void *)ssk;
	const struct mptcp_subflow_context *sf = BPF_CORE_READ(icsk, icsk_ulp_data);

	if (!sf)
		return NULL;
	return (const void *)BPF_CORE_READ(sf, conn);
}

/* A subflow's path index and its connection's token and key (MPTCP subflows only). */
static __always_inline void kf_fill_subflow(struct kf_event *e, const struct sock *ssk)
{
	const struct inet_connection_sock *icsk = (const void *)ssk;
	const struct mptcp_subflow_context *sf = BPF_CORE_READ(icsk, icsk_ulp_data);
	const struct mptcp_sock *msk;
	__u32 id;

	if (!sf)
		return;
	/* subflow_id (6.7+) numbers the subflows of a connection; older kernels: the local id. */
	if (bpf_core_field_exists(sf->subflow_id))
		id = BPF_CORE_READ(sf, subflow_id);
	else
		id = BPF_CORE_READ(sf, local_id);
	e->path_index = id > 255 ? 255 : id;
	msk = (const void *)BPF_CORE_READ(sf, conn);
	if (!msk)
		return;
	e->mptcp_token = BPF_CORE_READ(msk, token);
	e->mptcp_key = BPF_CORE_READ(msk, local_key);
}

/* Addresses, ports, namespace and states of a TCP socket; an MPTCP subflow's connection. */
static __always_inline void kf_fill_identity(struct kf_event *e, const struct sock *sk)
{
	const struct inet_connection_sock *icsk = (const void *)sk;
	const struct tcp_sock *tp = (const void *)sk;

	kf_fill_addresses(e, sk);
	e->ca_state = BPF_CORE_READ_BITFIELD_PROBED(icsk, icsk_ca_state);
	if (bpf_core_field_exists(tp->is_mptcp) && BPF_CORE_READ_BITFIELD_PROBED(tp, is_mptcp)) {
		e->flags |= KF_FLAG_MPTCP_SUBFLOW;
		kf_fill_subflow(e, sk);
	}
}

/*
 * Copies one tcp_sock field if this kernel has it, else marks it missing. The _BITFIELD_PROBED
 * read relocates the field's size as well as its offset, so a u16 here and a u32 there both work.
 */
#define KF_COUNTER(dst, field, bit)                                        \
	do {                                                               \
		if (bpf_core_field_exists(tp->field))                      \
			c->dst = BPF_CORE_READ_BITFIELD_PROBED(tp, field); \
		else                                                       \
			e->missing |= (bit);                               \
	} while (0)

/* The kernel's own counters for this connection. */
static __always_inline void kf_fill_counters(struct kf_event *e, const struct sock *sk)
{
	const struct tcp_sock *tp = (const void *)sk;
	struct kf_tcp_counters *c = &e->counters;

	KF_COUNTER(bytes_acked, bytes_acked, KF_MISSING_BYTES_ACKED);
	KF_COUNTER(bytes_received, bytes_received, KF_MISSING_BYTES_RECEIVED);
	KF_COUNTER(bytes_sent, bytes_sent, KF_MISSING_BYTES_SENT);
	KF_COUNTER(bytes_retrans, bytes_retrans, KF_MISSING_BYTES_RETRANS);
	KF_COUNTER(segs_in, segs_in, KF_MISSING_SEGS_IN);
	KF_COUNTER(segs_out, segs_out, KF_MISSING_SEGS_OUT);
	KF_COUNTER(data_segs_in, data_segs_in, KF_MISSING_DATA_SEGS_IN);
	KF_COUNTER(data_segs_out, data_segs_out, KF_MISSING_DATA_SEGS_OUT);
	KF_COUNTER(total_retrans, total_retrans, KF_MISSING_TOTAL_RETRANS);
	KF_COUNTER(srtt_us, srtt_us, KF_MISSING_SRTT_US);
	KF_COUNTER(mdev_us, mdev_us, KF_MISSING_MDEV_US);
	KF_COUNTER(rcv_ooopack, rcv_ooopack, KF_MISSING_RCV_OOOPACK);
	KF_COUNTER(dsack_dups, dsack_dups, KF_MISSING_DSACK_DUPS);
	KF_COUNTER(reord_seen, reord_seen, KF_MISSING_REORD_SEEN);
	KF_COUNTER(total_rto, total_rto, KF_MISSING_TOTAL_RTO);
	KF_COUNTER(total_rto_recoveries, total_rto_recoveries, KF_MISSING_TOTAL_RTO_RECOVERIES);
	KF_COUNTER(delivered, delivered, KF_MISSING_DELIVERED);
	KF_COUNTER(snd_cwnd, snd_cwnd, KF_MISSING_SND_CWND);
	c->srtt_us >>= 3;
	c->mdev_us >>= 2;
	c->unacked_bytes = BPF_CORE_READ(tp, snd_nxt) - BPF_CORE_READ(tp, snd_una);
}

static __always_inline void kf_fill(struct kf_event *e, const struct sock *sk, __u64 cookie,
				    __u8 kind, __u32 arg0, __u32 arg1, struct kf_sk_state *st)
{
	e->ts_ns = bpf_ktime_get_ns();
	e->cookie = cookie;
	e->kind = kind;
	e->arg0 = arg0;
	e->arg1 = arg1;
	kf_fill_identity(e, sk);
	kf_fill_counters(e, sk);
	if (!st)
		return;
	e->anc = st->anc;
	/* Keep the ports while the kernel has them; report them once the kernel cleared them. */
	if (e->sport)
		st->sport = e->sport;
	else
		e->sport = st->sport;
	if (e->dport)
		st->dport = e->dport;
	else
		e->dport = st->dport;
}

/* What a subflow's event hands to the MPTCP connection event that follows it. */
struct kf_subflow_ref {
	__u64 ts_ns;
	__u64 key;
	__u32 token;
	__u8 kind;
	__u8 path_index;
	__u8 ca_state;
	__u8 mptcp;
};

/*
 * Copies what the connection event needs from a subflow's event (before it is submitted);
 * for plain TCP only the flag test runs.
 */
static __always_inline void kf_subflow_ref(struct kf_subflow_ref *r, const struct kf_event *e)
{
	r->mptcp = (e->flags & KF_FLAG_MPTCP_SUBFLOW) && e->mptcp_key;
	if (!r->mptcp)
		return;
	r->ts_ns = e->ts_ns;
	r->key = e->mptcp_key;
	r->token = e->mptcp_token;
	r->kind = e->kind;
	r->path_index = e->path_index;
	r->ca_state = e->ca_state;
}

/* Subflows of an MPTCP connection alive now: the joined ones plus the initial one if open. */
static __always_inline __u32 kf_msk_subflows(const struct mptcp_sock *msk)
{
	const struct sock *first = BPF_CORE_READ(msk, first);
	__u32 n = 0;

	if (bpf_core_field_exists(msk->pm.extra_subflows))
		n = BPF_CORE_READ(msk, pm.extra_subflows);
	if (first && BPF_CORE_READ(first, __sk_common.skc_state) != TCP_CLOSE)
		n++;
	return n;
}

/*
 * The MPTCP connection of subflow `ssk` into `e` (KF_EV_MPTCP; layout in kpiflow-event.h).
 * Returns false when the subflow has no connection (anymore).
 */
static __always_inline bool kf_fill_mptcp(struct kf_event *e, const struct sock *ssk,
					  const struct kf_subflow_ref *r)
{
	const struct mptcp_sock *msk = kf_msk_of(ssk);
	const struct sock *sk = (const void *)msk;
	struct kf_msk_state *ms;
	__u64 una, nxt;
	__u32 created;

	if (!msk)
		return false;
	e->ts_ns = r->ts_ns;
	e->cookie = r->key;
	e->kind = KF_EV_MPTCP;
	kf_fill_addresses(e, sk);
	e->ca_state = r->ca_state;
	e->flags = KF_FLAG_MPTCP_META;
	if (BPF_CORE_READ(msk, rcv_fastclose) || (bpf_core_field_exists(msk->fastclosing) &&
						  BPF_CORE_READ_BITFIELD_PROBED(msk, fastclosing)))
		e->flags |= KF_FLAG_MPTCP_FASTCLOSE;
	e->path_index = r->path_index;
	e->mptcp_token = r->token;
	e->mptcp_key = r->key;
	e->arg0 = r->kind;
	e->arg1 = kf_msk_subflows(msk);
	e->counters.bytes_acked = BPF_CORE_READ(msk, bytes_acked);
	e->counters.bytes_received = BPF_CORE_READ(msk, bytes_received);
	e->counters.bytes_sent = BPF_CORE_READ(msk, bytes_sent);
	if (bpf_core_field_exists(msk->bytes_retrans))
		e->counters.bytes_retrans = BPF_CORE_READ(msk, bytes_retrans);
	else
		e->missing |= KF_MISSING_BYTES_RETRANS;
	e->counters.segs_in = BPF_CORE_READ(sk, sk_rcvbuf);
	if (bpf_core_field_exists(msk->subflow_id)) {
		created = BPF_CORE_READ(msk, subflow_id);
		e->counters.segs_out = created ? created - 1 : 0;
	} else {
		e->missing |= KF_MISSING_SEGS_OUT;
	}
	e->counters.total_retrans = BPF_CORE_READ(msk, sk.icsk_retransmits);
	una = BPF_CORE_READ(msk, snd_una);
	nxt = BPF_CORE_READ(msk, snd_nxt);
	e->counters.unacked_bytes = nxt - una > 0xffffffff ? 0xffffffff : nxt - una;
	ms = bpf_map_lookup_elem(&kf_msk, &r->key);
	if (ms) {
		e->anc.stalls = ms->hol_stalls;
		e->counters.data_segs_out = ms->reinj_segs;
		e->counters.rcv_ooopack = ms->ofo_segs;
	}
	return true;
}

/* Emits the MPTCP connection event that follows an MPTCP subflow's event. */
static __always_inline void kf_emit_mptcp(const struct sock *ssk, const struct kf_subflow_ref *r)
{
	struct kf_event *e;

	e = bpf_ringbuf_reserve(&kf_events, sizeof(*e), 0);
	if (!e) {
		kf_stat_add(KF_STAT_LOST, 1);
		return;
	}
	__builtin_memset(e, 0, sizeof(*e));
	if (!kf_fill_mptcp(e, ssk, r)) {
		bpf_ringbuf_discard(e, 0);
		return;
	}
	bpf_ringbuf_submit(e, 0);
	kf_stat_add(KF_STAT_EVENTS, 1);
}

/* The probes' state of an MPTCP connection, created on first use (NULL: map full of live ones). */
static __always_inline struct kf_msk_state *kf_msk_state_of(const struct mptcp_sock *msk)
{
	struct kf_msk_state init = {}, *ms;
	__u64 key = BPF_CORE_READ(msk, local_key);

	ms = bpf_map_lookup_elem(&kf_msk, &key);
	if (ms)
		return ms;
	bpf_map_update_elem(&kf_msk, &key, &init, BPF_NOEXIST);
	return bpf_map_lookup_elem(&kf_msk, &key);
}

/*
 * A subflow RTO with data outstanding: when its connection also has data unacknowledged at the
 * connection level, in-order delivery waits behind this subflow (until the data is reinjected
 * or recovered). This kernel has no hook on the connection-level retransmission timer, so this
 * is kpiflow's head-of-line stall.
 */
static __always_inline void kf_mptcp_rto(const struct sock *ssk)
{
	const struct tcp_sock *tp = (const void *)ssk;
	const struct mptcp_sock *msk;
	struct kf_msk_state *ms;

	if (!bpf_core_field_exists(tp->is_mptcp) || !BPF_CORE_READ_BITFIELD_PROBED(tp, is_mptcp))
		return;
	msk = kf_msk_of(ssk);
	if (!msk || BPF_CORE_READ(msk, snd_una) == BPF_CORE_READ(msk, snd_nxt))
		return;
	ms = kf_msk_state_of(msk);
	if (ms)
		__sync_fetch_and_add(&ms->hol_stalls, 1);
}

/* Reserves, fills and submits one event; a full ring is counted, never waited for. */
static __always_inline void kf_emit(const struct sock *sk, __u64 cookie, __u8 kind, __u32 arg0,
				    __u32 arg1, struct kf_sk_state *st)
{
	struct kf_subflow_ref ref;
	struct kf_event *e;

	e = bpf_ringbuf_reserve(&kf_events, sizeof(*e), 0);
	if (!e) {
		kf_stat_add(KF_STAT_LOST, 1);
		return;
	}
	/* Reserved memory is not zeroed: padding and absent fields must be. */
	__builtin_memset(e, 0, sizeof(*e));
	kf_fill(e, sk, cookie, kind, arg0, arg1, st);
	kf_subflow_ref(&ref, e);
	bpf_ringbuf_submit(e, 0);
	kf_stat_add(KF_STAT_EVENTS, 1);
	/* Plain TCP stops here: the flag was read for the event anyway. */
	if (ref.mptcp)
		kf_emit_mptcp(sk, &ref);
}

/* The socket's state, created on first use (NULL only when memory is short). */
static __always_inline struct kf_sk_state *kf_state_of(struct sock *sk)
{
	struct kf_sk_state *st;

	st = bpf_sk_storage_get(&kf_sk, sk, 0, BPF_SK_STORAGE_GET_F_CREATE);
	if (!st)
		kf_stat_add(KF_STAT_NO_STORAGE, 1);
	return st;
}

/*
 * True for the state changes the agent uses (agent/fsm.ts, agent/connection-table.ts): the close
 * (CLOSE, TIME_WAIT) and FIN_WAIT2 (our FIN acked; bytes_received there tells whether the peer's
 * FIN is counted at the close). The others say nothing the agent cannot read from these, from
 * the sockops events (connect, established) or from any later event's tcp_state: SYN_SENT and
 * SYN_RECV precede the connect and established events, ESTABLISHED is reported by sockops, and
 * FIN_WAIT1, CLOSE_WAIT, LAST_ACK and CLOSING come back as the close's old state. They are only
 * counted: at thousands of connections a second they were half of the ring's load.
 */
static __always_inline bool kf_state_wanted(int newstate)
{
	if (newstate == TCP_CLOSE || newstate == TCP_TIME_WAIT || newstate == TCP_FIN_WAIT2)
		return true;
	kf_stat_add(KF_STAT_QUIET_STATES, 1);
	return false;
}

/* Emits one state change; a close that reached the ring is remembered (see kf_destroy). */
static __always_inline void kf_emit_state(const struct sock *sk, __u64 cookie, int oldstate,
					  int newstate, struct kf_sk_state *st)
{
	struct kf_subflow_ref ref;
	struct kf_event *e;

	e = bpf_ringbuf_reserve(&kf_events, sizeof(*e), 0);
	if (!e) {
		kf_stat_add(KF_STAT_LOST, 1);
		return;
	}
	__builtin_memset(e, 0, sizeof(*e));
	kf_fill(e, sk, cookie, KF_EV_STATE, oldstate, newstate, st);
	/* The tracepoint runs before the store: report the state being entered. */
	e->tcp_state = newstate;
	kf_subflow_ref(&ref, e);
	bpf_ringbuf_submit(e, 0);
	kf_stat_add(KF_STAT_EVENTS, 1);
	if (st && newstate == TCP_CLOSE)
		st->close_sent = 1;
	if (ref.mptcp)
		kf_emit_mptcp(sk, &ref);
}

/* Emits from a tracing program, where the socket is a BTF pointer. */
static __always_inline void kf_emit_traced(struct sock *sk, __u8 kind, __u32 arg0, __u32 arg1)
{
	kf_emit(sk, bpf_get_socket_cookie(sk), kind, arg0, arg1, kf_state_of(sk));
}

static __always_inline void kf_syn_key(struct kf_syn_key *k, struct bpf_sock_ops *skops)
{
	k->netns_cookie = bpf_get_netns_cookie(skops);
	if (skops->family == AF_INET6) {
		k->laddr[0] = skops->local_ip6[0];
		k->laddr[1] = skops->local_ip6[1];
		k->laddr[2] = skops->local_ip6[2];
		k->laddr[3] = skops->local_ip6[3];
		k->raddr[0] = skops->remote_ip6[0];
		k->raddr[1] = skops->remote_ip6[1];
		k->raddr[2] = skops->remote_ip6[2];
		k->raddr[3] = skops->remote_ip6[3];
	} else {
		k->laddr[0] = skops->local_ip4;
		k->raddr[0] = skops->remote_ip4;
	}
	k->lport = skops->local_port;
	k->rport = skops->remote_port;
}

/*
 * Connection set-up, RTOs and (on kernels without the tracepoint) state changes, for every
 * socket of the cgroup v2 hierarchy. Callbacks are turned on per socket, only the rare ones.
 */
SEC("sockops")
int kf_sockops(struct bpf_sock_ops *skops)
{
	struct kf_syn_key key = {};
	struct kf_sk_state *st;
	struct bpf_sock *bsk;
	struct tcp_sock *tp;
	struct sock *sk;
	__u64 now, *syn;
	__u32 op = skops->op;
	__u8 kind;

	/* A passive open's SYN: the only callback that sees the request socket. */
	if (op == BPF_SOCK_OPS_TIMEOUT_INIT) {
		if (skops->is_fullsock)
			return 1;
		now = bpf_ktime_get_ns();
		kf_syn_key(&key, skops);
		bpf_map_update_elem(&kf_syn_rx, &key, &now, BPF_ANY);
		return 1;
	}
	if (op != BPF_SOCK_OPS_TCP_CONNECT_CB && op != BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB &&
	    op != BPF_SOCK_OPS_PASSIVE_ESTABLISHED_CB && op != BPF_SOCK_OPS_RTO_CB &&
	    op != BPF_SOCK_OPS_STATE_CB)
		return 1;
	bsk = skops->sk;
	if (!bsk)
		return 1;
	tp = bpf_skc_to_tcp_sock(bsk);
	if (!tp)
		return 1;
	sk = (struct sock *)tp;
	if (!kf_netns_ok(sk))
		return 1;
	st = bpf_sk_storage_get(&kf_sk, bsk, 0, BPF_SK_STORAGE_GET_F_CREATE);
	if (!st)
		kf_stat_add(KF_STAT_NO_STORAGE, 1);

	switch (op) {
	case BPF_SOCK_OPS_TCP_CONNECT_CB:
		bpf_sock_ops_cb_flags_set(skops, skops->bpf_sock_ops_cb_flags | KF_CB_FLAGS);
		if (st)
			st->anc.syn_ns = bpf_ktime_get_ns();
		kind = KF_EV_CONNECT;
		break;
	case BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB:
		bpf_sock_ops_cb_flags_set(skops, skops->bpf_sock_ops_cb_flags | KF_CB_FLAGS);
		/*
		 * Before the handshake completes, total_retrans counts SYNs actually resent. An RTO
		 * in SYN_SENT resends nothing while the first SYN is still queued in the host (e.g.
		 * waiting for neighbour discovery), so the kernel's count replaces the RTO count.
		 */
		if (st)
			st->anc.syn_retrans = skops->total_retrans;
		kind = KF_EV_ACTIVE_ESTABLISHED;
		break;
	case BPF_SOCK_OPS_PASSIVE_ESTABLISHED_CB:
		bpf_sock_ops_cb_flags_set(skops, skops->bpf_sock_ops_cb_flags | KF_CB_FLAGS);
		kf_syn_key(&key, skops);
		syn = bpf_map_lookup_elem(&kf_syn_rx, &key);
		if (st) {
			if (syn)
				st->anc.syn_ns = *syn;
			/* The child inherits the request's SYN-ACK retransmissions here. */
			st->anc.syn_retrans = skops->total_retrans;
		}
		if (syn)
			bpf_map_delete_elem(&kf_syn_rx, &key);
		kind = KF_EV_PASSIVE_ESTABLISHED;
		break;
	case BPF_SOCK_OPS_RTO_CB:
		/* args: icsk_retransmits, icsk_rto, expired (nothing is resent when expired). */
		if (st) {
			if (skops->state == TCP_SYN_SENT || skops->state == TCP_SYN_RECV) {
				if (!skops->args[2])
					__sync_fetch_and_add(&st->anc.syn_retrans, 1);
			} else if (skops->snd_nxt != skops->snd_una) {
				__sync_fetch_and_add(&st->anc.stalls, 1);
				kf_mptcp_rto(sk);
			}
		}
		kf_emit(sk, bpf_get_socket_cookie(skops), KF_EV_RTO, skops->args[0],
			skops->packets_out, st);
		return 1;
	case BPF_SOCK_OPS_STATE_CB:
		if (!kf_state_via_sockops || !kf_state_wanted(skops->args[1]))
			return 1;
		kf_emit_state(sk, bpf_get_socket_cookie(skops), skops->args[0], skops->args[1], st);
		return 1;
	default:
		return 1;
	}
	kf_emit(sk, bpf_get_socket_cookie(skops), kind, 0, 0, st);
	return 1;
}

/* Every TCP state change, including sockets opened before the agent and outside sockops. */
SEC("tp_btf/inet_sock_set_state")
int BPF_PROG(kf_state, struct sock *sk, int oldstate, int newstate)
{
	if (kf_state_via_sockops)
		return 0;
	if (BPF_CORE_READ_BITFIELD_PROBED(sk, sk_protocol) != IPPROTO_TCP)
		return 0;
	/* Listeners are not connections. */
	if (oldstate == TCP_LISTEN || newstate == TCP_LISTEN)
		return 0;
	if (!kf_netns_ok(sk) || !kf_state_wanted(newstate))
		return 0;
	kf_emit_state(sk, bpf_get_socket_cookie(sk), oldstate, newstate, kf_state_of(sk));
	return 0;
}

/* Congestion-avoidance state changes (Open, Disorder, CWR, Recovery, Loss). */
SEC("tp_btf/tcp_cong_state_set")
int BPF_PROG(kf_cong_state, struct sock *sk, __u8 ca_state)
{
	const struct inet_connection_sock *icsk = (const void *)sk;
	__u8 old = BPF_CORE_READ_BITFIELD_PROBED(icsk, icsk_ca_state);
	struct kf_subflow_ref ref;
	struct kf_event *e;

	if (old == ca_state || !kf_tcp_fullsock(sk) || !kf_netns_ok(sk))
		return 0;
	e = bpf_ringbuf_reserve(&kf_events, sizeof(*e), 0);
	if (!e) {
		kf_stat_add(KF_STAT_LOST, 1);
		return 0;
	}
	__builtin_memset(e, 0, sizeof(*e));
	kf_fill(e, sk, bpf_get_socket_cookie(sk), KF_EV_CONG_STATE, old, ca_state, kf_state_of(sk));
	/* The tracepoint runs before the store: report the state being entered. */
	e->ca_state = ca_state;
	kf_subflow_ref(&ref, e);
	bpf_ringbuf_submit(e, 0);
	kf_stat_add(KF_STAT_EVENTS, 1);
	if (ref.mptcp)
		kf_emit_mptcp(sk, &ref);
	return 0;
}

/* The drop reason's value in this kernel, or -1 when it has no such reason. */
#define KF_DROP_REASON(name)                                            \
	(bpf_core_enum_value_exists(enum skb_drop_reason, name)         \
		 ? (int)bpf_core_enum_value(enum skb_drop_reason, name) \
		 : -1)

/*
 * Drops with a reason. Data the receiver already had (the peer retransmitted it spuriously) is
 * the "duplicate" KPI, as the kernel's TcpExtDelayedACKLost counts it: TCP_OLD_DATA when it
 * reached the receive queue, TCP_OLD_SEQUENCE when it lies wholly before the last advertised
 * window edge and the sequence check drops it first; and a segment that starts with data already
 * received but is dropped for another reason the kernel answers with a duplicate ACK: its end
 * lies beyond the window while data waits to be read (TCP_INVALID_END_SEQUENCE, 6.18+), or PAWS
 * refused it (TCP_RFC7323_PAWS). Those count their already-received part only. TCP_CSUM ties a
 * bad checksum to its socket. rx_sk (6.11+) names the socket.
 */
SEC("tp_btf/kfree_skb")
int BPF_PROG(kf_kfree_skb, struct sk_buff *skb, void *location, enum skb_drop_reason reason,
	     struct sock *rx_sk)
{
	const struct tcp_skb_cb *tcb = (const void *)skb->cb;
	struct kf_sk_state *st;
	__u32 len, seq, old;
	bool head_only;

	head_only = (int)reason == KF_DROP_REASON(SKB_DROP_REASON_TCP_INVALID_END_SEQUENCE) ||
		    (int)reason == KF_DROP_REASON(SKB_DROP_REASON_TCP_RFC7323_PAWS);
	if ((int)reason != KF_DROP_REASON(SKB_DROP_REASON_TCP_OLD_DATA) &&
	    (int)reason != KF_DROP_REASON(SKB_DROP_REASON_TCP_OLD_SEQUENCE) &&
	    (int)reason != KF_DROP_REASON(SKB_DROP_REASON_TCP_CSUM) && !head_only)
		return 0;
	if (!kf_tcp_fullsock(rx_sk) || !kf_netns_ok(rx_sk))
		return 0;
	if ((int)reason == KF_DROP_REASON(SKB_DROP_REASON_TCP_CSUM)) {
		st = kf_state_of(rx_sk);
		if (st)
			__sync_fetch_and_add(&st->anc.bad_checksums, 1);
		kf_emit(rx_sk, bpf_get_socket_cookie(rx_sk), KF_EV_BAD_CHECKSUM, 0, 0, st);
		return 0;
	}
	/* Sequence space covered: the payload (a FIN counts one). Pure ACKs carry no data. */
	seq = BPF_CORE_READ(tcb, seq);
	len = BPF_CORE_READ(tcb, end_seq) - seq;
	if (!len)
		return 0;
	/* Dropped whole, but only the part before rcv_nxt was received already (if any). */
	if (head_only) {
		old = BPF_CORE_READ((const struct tcp_sock *)rx_sk, rcv_nxt) - seq;
		if ((__s32)old <= 0)
			return 0;
		if (old < len)
			len = old;
	}
	st = kf_state_of(rx_sk);
	if (st) {
		__sync_fetch_and_add(&st->anc.dup_packets, 1);
		__sync_fetch_and_add(&st->anc.dup_octets, len);
	}
	kf_emit(rx_sk, bpf_get_socket_cookie(rx_sk), KF_EV_DUPLICATE, len, 0, st);
	return 0;
}

/* Bad checksums host-wide: most are found before the socket lookup, so only counted here. */
SEC("tp_btf/tcp_bad_csum")
int BPF_PROG(kf_bad_csum, const struct sk_buff *skb)
{
	kf_stat_add(KF_STAT_BAD_CHECKSUMS_HOST, 1);
	return 0;
}

SEC("tp_btf/tcp_send_reset")
int BPF_PROG(kf_send_reset, struct sock *sk)
{
	/* sk is NULL for a reset answering no socket, or a mini-socket: not a connection. */
	if (!kf_tcp_fullsock(sk) || !kf_netns_ok(sk))
		return 0;
	kf_emit_traced(sk, KF_EV_RESET_SENT, 0, 0);
	return 0;
}

SEC("tp_btf/tcp_receive_reset")
int BPF_PROG(kf_receive_reset, struct sock *sk)
{
	if (!kf_tcp_fullsock(sk) || !kf_netns_ok(sk))
		return 0;
	kf_emit_traced(sk, KF_EV_RESET_RECEIVED, 0, 0);
	return 0;
}

/*
 * An MPTCP subflow goes: a judgement still waiting for its data (never moved) is dropped, it
 * must not read the freed socket (see kf_mptcp_data_avail).
 */
static __always_inline void kf_ofo_forget(const struct sock *ssk)
{
	const struct tcp_sock *tp = (const void *)ssk;
	const struct mptcp_sock *msk;
	struct kf_msk_state *ms;
	__u64 key;
	__u32 i;

	if (!bpf_core_field_exists(tp->is_mptcp) || !BPF_CORE_READ_BITFIELD_PROBED(tp, is_mptcp))
		return;
	msk = kf_msk_of(ssk);
	if (!msk)
		return;
	key = BPF_CORE_READ(msk, local_key);
	ms = bpf_map_lookup_elem(&kf_msk, &key);
	if (!ms)
		return;
	for (i = 0; i < 4; i++)
		if (ms->ofo_pending_ssk[i] == (__u64)ssk)
			ms->ofo_pending[i] = 0;
}

/* The last event of a socket, with its final counters. Storage is freed after this. */
SEC("tp_btf/tcp_destroy_sock")
int BPF_PROG(kf_destroy, struct sock *sk)
{
	struct kf_sk_state *st;

	if (!kf_netns_ok(sk))
		return 0;
	kf_ofo_forget(sk);
	/* Only sockets that had an event: listeners and never-connected sockets have no storage. */
	st = bpf_sk_storage_get(&kf_sk, sk, 0, 0);
	if (!st)
		return 0;
	/* The agent ended the connection at its close already; only a lost close needs this. */
	if (st->close_sent) {
		kf_stat_add(KF_STAT_QUIET_DESTROYS, 1);
		return 0;
	}
	kf_emit(sk, bpf_get_socket_cookie(sk), KF_EV_DESTROY, 0, 0, st);
	return 0;
}

/*
 * One snapshot per TCP connection of the namespace the iterator is opened in: start-up pick-up
 * and the active timeout, at no fast-path cost. Written with bpf_seq_write, same layout.
 */
SEC("iter/tcp")
int kf_iter_tcp(struct bpf_iter__tcp *ctx)
{
	struct sock_common *skc = ctx->sk_common;
	struct kf_subflow_ref ref;
	struct kf_sk_state *st;
	struct kf_event e = {}, *m;
	__u32 zero = 0;
	struct tcp_sock *tp;
	struct sock *sk;
	int flags;
	__u8 state;

	if (!skc)
		return 0;
	state = skc->skc_state;
	if (state == TCP_LISTEN || state == TCP_TIME_WAIT || state == TCP_NEW_SYN_RECV)
		return 0;
	tp = bpf_skc_to_tcp_sock(skc);
	if (!tp)
		return 0;
	sk = (struct sock *)tp;
	if (!kf_netns_ok(sk))
		return 0;
	st = kf_state_of(sk);
	/*
	 * Pre-existing sockets never passed our sockops hooks: give them the RTO callback now
	 * (kernels before 6.13 refuse this option; they only miss those sockets' RTO events).
	 */
	flags = tp->bpf_sock_ops_cb_flags;
	if (kf_iter_enable_callbacks && (flags & KF_CB_FLAGS) != KF_CB_FLAGS) {
		flags |= KF_CB_FLAGS;
		bpf_setsockopt(tp, SOL_TCP, TCP_BPF_SOCK_OPS_CB_FLAGS, &flags, sizeof(flags));
	}
	kf_fill(&e, sk, bpf_get_socket_cookie(tp), KF_EV_SNAPSHOT, state, 0, st);
	bpf_seq_write(ctx->meta->seq, &e, sizeof(e));
	kf_subflow_ref(&ref, &e);
	if (!ref.mptcp)
		return 0;
	/* An MPTCP subflow: its connection's snapshot follows, as in the ring. */
	m = bpf_map_lookup_elem(&kf_iter_scratch, &zero);
	if (!m)
		return 0;
	__builtin_memset(m, 0, sizeof(*m));
	if (kf_fill_mptcp(m, sk, &ref))
		bpf_seq_write(ctx->meta->seq, m, sizeof(*m));
	return 0;
}

/*
 * Opt-in per-packet mode (not attached by default): runs on every segment a connection
 * receives. It measures what no rare hook can, the out-of-order distance (bytes between a
 * segment's sequence number and rcv_nxt), and it reads the full counter snapshot each time,
 * as a naive monitor polling the socket per packet would: the overhead benchmark's baseline.
 */
SEC("tp_btf/tcp_probe")
int BPF_PROG(kf_naive_probe, struct sock *sk, const struct sk_buff *skb)
{
	const struct tcp_skb_cb *tcb = (const void *)skb->cb;
	const struct tcp_sock *tp = (const void *)sk;
	struct kf_sk_state *st;
	struct kf_event *scratch;
	__u32 zero = 0, seq, rcv_nxt, dist;

	if (!kf_netns_ok(sk))
		return 0;
	scratch = bpf_map_lookup_elem(&kf_scratch, &zero);
	if (!scratch)
		return 0;
	kf_fill_counters(scratch, sk);
	seq = BPF_CORE_READ(tcb, seq);
	rcv_nxt = BPF_CORE_READ(tp, rcv_nxt);
	dist = seq - rcv_nxt;
	/* after(seq, rcv_nxt) in sequence space. */
	if ((__s32)dist <= 0)
		return 0;
	st = kf_state_of(sk);
	if (!st)
		return 0;
	__sync_fetch_and_add(&st->anc.ofo_dist_count, 1);
	__sync_fetch_and_add(&st->anc.ofo_dist_sum, dist);
	__sync_fetch_and_add(&st->anc.ofo_dist_sumsq, (__u64)dist * dist);
	return 0;
}

/*
 * MPTCP connection level, per segment but for MPTCP only: these tracepoints exist in the MPTCP
 * code alone, so plain TCP never runs them. Each program only adds to its connection's entry
 * of kf_msk; the counts travel in the connection's next event.
 */

/* Remembers the connection this task schedules data for: the hint kf_mptcp_frag checks. */
SEC("tp_btf/mptcp_subflow_get_send")
int BPF_PROG(kf_mptcp_get_send, struct mptcp_subflow_context *subflow)
{
	struct task_struct *task = bpf_get_current_task_btf();
	__u64 *slot;

	slot = bpf_task_storage_get(&kf_task_msk, task, 0, BPF_LOCAL_STORAGE_GET_F_CREATE);
	if (slot)
		*slot = (__u64)BPF_CORE_READ(subflow, conn);
	return 0;
}

/*
 * The connection whose data the current task is sending: on a kworker running mptcp_worker
 * (the retransmission timer's work) its work item's connection; otherwise the one this task
 * last scheduled for.
 */
static __always_inline const struct mptcp_sock *kf_sending_msk(void)
{
	struct task_struct *task = bpf_get_current_task_btf();
	const struct worker *w;
	__u64 *slot;

	/* A kworker's worker_private is its struct kthread, whose data is its struct worker. */
	if ((task->flags & 0x20 /* PF_WQ_WORKER */) && &mptcp_worker) {
		w = (const void *)BPF_CORE_READ((struct kthread *)task->worker_private, data);
		if (w && (const void *)BPF_CORE_READ(w, current_func) == &mptcp_worker)
			return (const void *)BPF_CORE_READ(w, current_work) -
			       bpf_core_field_offset(struct mptcp_sock, work);
	}
	slot = bpf_task_storage_get(&kf_task_msk, task, 0, 0);
	return slot ? (const void *)*slot : NULL;
}

/* Frames searched for mptcp_sendmsg_frag's: the tracing machinery's come first. */
#define KF_STACK_DEPTH 8

/*
 * One data mapping handed to a subflow (mptcp_sendmsg_frag). A mapping that ends at or below
 * the connection's snd_nxt carries data sent before (new data always ends beyond it: snd_nxt
 * moves after the call). Among those, the calls made by __mptcp_retrans are the reinjections
 * MPTcpExtMPTCPRetrans counts (one per call); re-sends after a subflow went stale or closed
 * (recovery, through the ordinary push) are not, for the kernel either. Only re-sent data pays
 * for the stack walk that tells the two apart.
 */
SEC("tp_btf/mptcp_sendmsg_frag")
int BPF_PROG(kf_mptcp_frag, struct mptcp_ext *mpext)
{
	const struct mptcp_sock *msk;
	__u64 seq, end, stack[KF_STACK_DEPTH];
	struct kf_msk_state *ms;
	bool found = false;
	long n;
	int i;

	if (!kf_retrans_lo || !kf_frag_lo)
		return 0;
	msk = kf_sending_msk();
	if (!msk)
		return 0;
	seq = BPF_CORE_READ(mpext, data_seq);
	end = seq + BPF_CORE_READ(mpext, data_len);
	/* A stale hint (another connection) fails this with 64-bit random sequence spaces. */
	if ((__s64)(seq - BPF_CORE_READ(msk, snd_una)) < 0 ||
	    (__s64)(end - BPF_CORE_READ(msk, write_seq)) > 0)
		return 0;
	if ((__s64)(end - BPF_CORE_READ(msk, snd_nxt)) > 0 || !kf_netns_ok((const void *)msk))
		return 0;
	/* Data sent before: from the retransmission path, or re-sent in recovery (not counted). */
	n = bpf_get_stack(ctx, stack, sizeof(stack), 0);
	if (n <= 0)
		return 0;
	n /= sizeof(stack[0]);
	for (i = 0; i + 1 < KF_STACK_DEPTH; i++) {
		if (i + 1 >= n)
			return 0;
		if (stack[i] >= kf_frag_lo && stack[i] < kf_frag_hi) {
			found = stack[i + 1] >= kf_retrans_lo && stack[i + 1] < kf_retrans_hi;
			break;
		}
	}
	if (!found)
		return 0;
	ms = kf_msk_state_of(msk);
	if (ms)
		__sync_fetch_and_add(&ms->reinj_segs, 1);
	return 0;
}

/* Receive-queue buffers looked at after the head, for the rest of its mapping. */
#define KF_RUN_MAX 64

/*
 * The buffers of `ssk`'s receive queue, from its head `skb`, within the head's mapping: the
 * kernel moves them to the connection one by one, in the same loop, without checking the
 * mapping again (no tracepoint), each with the head's fate (MPTcpExtOFOQueue counts each).
 */
static __always_inline __u32 kf_mapping_run(const struct sock *ssk, const struct sk_buff *skb,
					    const struct mptcp_subflow_context *sf)
{
	const void *queue = &ssk->sk_receive_queue;
	__u32 end = BPF_CORE_READ(sf, map_subflow_seq) + BPF_CORE_READ(sf, map_data_len);
	__u32 isn = BPF_CORE_READ(sf, ssn_offset);
	const struct sk_buff *next;
	__u32 run = 1, i;

	for (i = 0; i < KF_RUN_MAX; i++) {
		next = BPF_CORE_READ(skb, next);
		if (!next || (const void *)next == queue)
			break;
		if ((__s32)(BPF_CORE_READ((const struct tcp_skb_cb *)next->cb, seq) - isn - end) >=
		    0)
			break;
		run++;
		skb = next;
	}
	return run;
}

/*
 * Makes the judgements of `ms` whose data moved (its subflow's copied_seq changed since): from
 * the move to the kernel's next check of that subflow (the loop that moves a subflow's data ends
 * only after one: the head of the next mapping, or an empty queue), ack_seq has passed the data
 * unless it went out of order; the out-of-order queue is merged only after that loop. Returns
 * whether a judgement still waits.
 */
static __always_inline bool kf_ofo_judge(struct kf_msk_state *ms)
{
	const struct mptcp_sock *msk = (const void *)ms->ofo_msk;
	const struct tcp_sock *tp;
	bool waiting = false;
	__u64 dsn;
	__u32 i;

	for (i = 0; i < 4; i++) {
		dsn = ms->ofo_pending[i];
		if (!dsn)
			continue;
		tp = (const void *)ms->ofo_pending_ssk[i];
		if (BPF_CORE_READ(tp, copied_seq) == ms->ofo_pending_copied[i]) {
			waiting = true;
			continue;
		}
		if ((__s64)(dsn - BPF_CORE_READ(msk, ack_seq)) > 0)
			__sync_fetch_and_add(&ms->ofo_segs, ms->ofo_pending_run[i]);
		ms->ofo_pending[i] = 0;
	}
	return waiting;
}

/* Every check: the judgements waiting on any connection (kf_ofo_wait) whose data moved. */
static __always_inline void kf_ofo_judge_all(void)
{
	struct kf_msk_state *ms;
	__u64 *key;
	__u32 i;

	for (i = 0; i < KF_OFO_WAIT; i++) {
		key = bpf_map_lookup_elem(&kf_ofo_wait, &i);
		if (!key || !*key)
			continue;
		ms = bpf_map_lookup_elem(&kf_msk, key);
		if (!ms || !kf_ofo_judge(ms))
			*key = 0;
	}
}

/* Lists connection `key` in kf_ofo_wait, if not yet there and a place is free. */
static __always_inline void kf_ofo_wait_add(__u64 key)
{
	__u32 i, free = KF_OFO_WAIT;
	__u64 *k;

	for (i = 0; i < KF_OFO_WAIT; i++) {
		k = bpf_map_lookup_elem(&kf_ofo_wait, &i);
		if (!k)
			continue;
		if (*k == key)
			return;
		if (!*k && free == KF_OFO_WAIT)
			free = i;
	}
	k = bpf_map_lookup_elem(&kf_ofo_wait, &free);
	if (k)
		*k = key;
}

/*
 * A subflow has data for its connection (status 0, MAPPING_OK): skb is the head of its
 * receive queue. Its data sequence number (the mapping's, plus what the subflow already moved)
 * beyond the connection's ack_seq goes to the connection's out-of-order queue, as
 * __mptcp_move_skb decides; within the receive window, else it is dropped (NODSSWINDOW).
 * Every check, whatever its status, first makes the judgements waiting for data that moved.
 */
SEC("tp_btf/subflow_check_data_avail")
int BPF_PROG(kf_mptcp_data_avail, __u8 status, struct sk_buff *skb)
{
	const struct mptcp_subflow_context *sf;
	const struct mptcp_sock *msk;
	const struct tcp_sock *tp;
	const struct sock *ssk;
	struct kf_msk_state *ms;
	__u64 dsn, ack, wnd, key;
	__u32 copied, off, len, slot, run;

	kf_ofo_judge_all();
	if (status != 0 || !skb)
		return 0;
	ssk = BPF_CORE_READ(skb, sk);
	if (!ssk || !kf_netns_ok(ssk))
		return 0;
	tp = (const void *)ssk;
	sf = (const void *)BPF_CORE_READ((const struct inet_connection_sock *)ssk, icsk_ulp_data);
	if (!sf)
		return 0;
	msk = (const void *)BPF_CORE_READ(sf, conn);
	if (!msk)
		return 0;
	copied = BPF_CORE_READ(tp, copied_seq);
	dsn = BPF_CORE_READ(sf, map_seq) +
	      (__u32)(copied - BPF_CORE_READ(sf, ssn_offset) - BPF_CORE_READ(sf, map_subflow_seq));
	slot = BPF_CORE_READ(sf, subflow_id) & 3;
	key = BPF_CORE_READ(msk, local_key);
	ms = bpf_map_lookup_elem(&kf_msk, &key);
	/* This connection's, in case kf_ofo_wait had no place for it. */
	if (ms && kf_ofo_judge(ms))
		kf_ofo_wait_add(key);
	ack = BPF_CORE_READ(msk, ack_seq);
	if ((__s64)(dsn - ack) <= 0)
		return 0;
	off = copied - BPF_CORE_READ((const struct tcp_skb_cb *)skb->cb, seq);
	len = BPF_CORE_READ(skb, len);
	wnd = BPF_CORE_READ(msk, rcv_wnd_sent.counter);
	if (off >= len || (__s64)(dsn + (len - off) - wnd) > 0)
		return 0;
	if (!ms)
		ms = kf_msk_state_of(msk);
	if (!ms)
		return 0;
	/* The same head is checked again until it moves: judge it once. */
	if (ms->ofo_seen[slot] == dsn)
		return 0;
	ms->ofo_seen[slot] = dsn;
	/*
	 * The application holds the connection's socket: the kernel moves this data when it
	 * releases it (or now, if this check is its own move's), by then other subflows' data may
	 * have filled the gap. Judge it once it moved (kf_ofo_judge).
	 */
	run = kf_mapping_run(ssk, skb, sf);
	if (BPF_CORE_READ(msk, sk.icsk_inet.sk.sk_lock.owned)) {
		ms->ofo_msk = (__u64)msk;
		ms->ofo_pending_ssk[slot] = (__u64)ssk;
		ms->ofo_pending_copied[slot] = copied;
		ms->ofo_pending_run[slot] = run;
		ms->ofo_pending[slot] = dsn;
		kf_ofo_wait_add(key);
		return 0;
	}
	__sync_fetch_and_add(&ms->ofo_segs, run);
	return 0;
}
