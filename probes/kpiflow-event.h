/* SPDX-License-Identifier: (GPL-2.0 OR BSD-3-Clause) */
/*
 * The one event layout shared by every probe and mirrored by agent/probe-event-decoder.ts.
 * A test compares the decoder's offsets with this struct as the compiled object's BTF describes
 * it, so change both together. Every field is naturally aligned and padding is explicit: the
 * layout is the same for clang's BPF target and for any reader, with no packing attribute.
 */
#ifndef KPIFLOW_EVENT_H
#define KPIFLOW_EVENT_H

/* Event kinds: must equal EVENT_KIND in agent/probe-event.ts. 6 is reserved (retransmission). */
enum kf_event_kind {
	KF_EV_CONNECT = 1,
	KF_EV_ACTIVE_ESTABLISHED = 2,
	KF_EV_PASSIVE_ESTABLISHED = 3,
	KF_EV_STATE = 4,
	KF_EV_RTO = 5,
	KF_EV_CONG_STATE = 7,
	KF_EV_DUPLICATE = 8,
	KF_EV_BAD_CHECKSUM = 9,
	KF_EV_RESET_SENT = 10,
	KF_EV_RESET_RECEIVED = 11,
	KF_EV_SNAPSHOT = 12,
	KF_EV_DESTROY = 13,
	/*
	 * The MPTCP connection (struct mptcp_sock) of the subflow whose event precedes this one in
	 * the ring: same instant, counters of the connection level (struct kf_event comment).
	 */
	KF_EV_MPTCP = 14,
};

/* Bits of kf_event.missing, one per kf_tcp_counters field in TcpCounters order. */
enum kf_missing_bit {
	KF_MISSING_BYTES_ACKED = 1 << 0,
	KF_MISSING_BYTES_RECEIVED = 1 << 1,
	KF_MISSING_BYTES_SENT = 1 << 2,
	KF_MISSING_BYTES_RETRANS = 1 << 3,
	KF_MISSING_SEGS_IN = 1 << 4,
	KF_MISSING_SEGS_OUT = 1 << 5,
	KF_MISSING_DATA_SEGS_IN = 1 << 6,
	KF_MISSING_DATA_SEGS_OUT = 1 << 7,
	KF_MISSING_TOTAL_RETRANS = 1 << 8,
	KF_MISSING_SRTT_US = 1 << 9,
	KF_MISSING_MDEV_US = 1 << 10,
	KF_MISSING_RCV_OOOPACK = 1 << 11,
	KF_MISSING_DSACK_DUPS = 1 << 12,
	KF_MISSING_REORD_SEEN = 1 << 13,
	KF_MISSING_TOTAL_RTO = 1 << 14,
	KF_MISSING_TOTAL_RTO_RECOVERIES = 1 << 15,
	KF_MISSING_DELIVERED = 1 << 16,
	KF_MISSING_SND_CWND = 1 << 17,
	KF_MISSING_UNACKED_BYTES = 1 << 18,
};

/* Bits of kf_event.flags. */
enum kf_event_flag {
	KF_FLAG_MPTCP_SUBFLOW = 1 << 0,
	/* A KF_EV_MPTCP event: the MPTCP connection, not a TCP socket. */
	KF_FLAG_MPTCP_META = 1 << 1,
	/* The MPTCP connection was closed by MP_FASTCLOSE (sent or received): an abort. */
	KF_FLAG_MPTCP_FASTCLOSE = 1 << 2,
};

/* Indexes of the per-CPU statistics array kf_stats. */
enum kf_stat {
	KF_STAT_LOST = 0, /* events dropped: ring buffer full */
	KF_STAT_EVENTS = 1, /* events submitted to the ring buffer */
	KF_STAT_BAD_CHECKSUMS_HOST = 2, /* tcp_bad_csum anywhere, tied to a socket or not */
	KF_STAT_NO_STORAGE = 3, /* socket storage could not be allocated */
	KF_STAT_QUIET_STATES = 4, /* state changes not sent: the agent needs nothing from them */
	KF_STAT_QUIET_DESTROYS = 5, /* destroys not sent: the socket's close was already reported */
	KF_STAT_MAX = 6,
};

/* Snapshot of struct tcp_sock (TcpCounters). Kernel u64 byte counters stay u64. */
struct kf_tcp_counters {
	__u64 bytes_acked;
	__u64 bytes_received;
	__u64 bytes_sent;
	__u64 bytes_retrans;
	__u32 segs_in;
	__u32 segs_out;
	__u32 data_segs_in;
	__u32 data_segs_out;
	__u32 total_retrans;
	__u32 srtt_us; /* srtt_us >> 3: microseconds */
	__u32 mdev_us; /* mdev_us >> 2: microseconds */
	__u32 rcv_ooopack;
	__u32 dsack_dups;
	__u32 reord_seen;
	__u32 total_rto;
	__u32 total_rto_recoveries;
	__u32 delivered;
	__u32 snd_cwnd;
	__u32 unacked_bytes; /* snd_nxt - snd_una */
	__u32 _pad;
};

/*
 * Per-connection state the probes keep themselves (AncillaryCounters); also the value of the
 * socket-local storage map, so an event copies it whole. The ofo_* fields are filled only by the
 * opt-in per-packet program (distance in bytes between a segment's seq and rcv_nxt).
 */
struct kf_ancillary {
	__u64 syn_ns;
	__u64 dup_octets;
	__u32 syn_retrans;
	__u32 dup_packets;
	__u32 bad_checksums;
	__u32 stalls;
	__u32 ofo_dist_count;
	__u32 _pad;
	__u64 ofo_dist_sum;
	__u64 ofo_dist_sumsq;
};

/*
 * One event. Addresses are in network order; IPv4 uses the first 4 bytes, the rest is zero.
 *
 * MPTCP subflows (KF_FLAG_MPTCP_SUBFLOW) also carry path_index (the kernel's subflow id in its
 * connection: 1 for the initial subflow, then 2, 3, ... in order of creation), and the token
 * and local key of their MPTCP connection (0 until the kernel chose them). Plain TCP leaves
 * the three zero.
 *
 * A KF_EV_MPTCP event describes the MPTCP connection (the meta socket) instead: cookie and
 * mptcp_key are its local key, addresses, ports, netns and tcp_state are the meta socket's,
 * ca_state and path_index those of the subflow whose event came just before (arg0 is that
 * event's kind), arg1 the subflows alive now. Its counters mean: bytes_acked, bytes_received,
 * bytes_sent, bytes_retrans the connection level's (data sequence space; bytes_retrans are the
 * bytes reinjected by the MPTCP retransmission timer), segs_in the meta socket's receive
 * buffer (sk_rcvbuf, bytes), segs_out the subflows created so far, total_retrans the meta
 * socket's icsk_retransmits, unacked_bytes the connection level's snd_nxt - snd_una,
 * data_segs_out the segments reinjected by the MPTCP retransmission path, rcv_ooopack the
 * buffers queued out of order at connection level (both counted by the probes, kf_msk);
 * anc.stalls the head-of-line stalls (subflow RTOs while the connection level had data
 * unacknowledged); every other counter is 0.
 */
struct kf_event {
	__u64 ts_ns; /* bpf_ktime_get_ns() */
	__u64 cookie; /* socket cookie */
	__u8 saddr[16]; /* local address */
	__u8 daddr[16]; /* remote address */
	__u32 netns; /* network namespace inode number */
	__u16 sport; /* local port, host order */
	__u16 dport; /* remote port, host order */
	__u8 kind; /* enum kf_event_kind */
	__u8 ip_version; /* 4 or 6 */
	__u8 tcp_state; /* TCP_* */
	__u8 ca_state; /* TCP_CA_* */
	__u8 flags; /* enum kf_event_flag */
	__u8 path_index; /* MPTCP subflow id */
	__u8 _pad0[2];
	__u32 missing; /* enum kf_missing_bit */
	__u32 arg0;
	__u32 arg1;
	__u32 mptcp_token; /* MPTCP connection token */
	struct kf_tcp_counters counters;
	struct kf_ancillary anc;
	__u64 mptcp_key; /* MPTCP connection local key */
};

#endif /* KPIFLOW_EVENT_H */
