/**
 * The connection life-cycle (ARCHITECTURE, "Connection life-cycle"): a pure, table-driven state
 * machine. `classify` turns a probe event into one FSM input; `next` looks the input up in
 * `TRANSITIONS`. Every transition marked `profile` closes the current profile window and opens
 * the next one. Nothing here keeps state: the connection table owns it.
 */
import { EVENT_KIND, type ProbeEvent } from './probe-event.js';

/** Connection states, numbered as on the wire (flowStartReason, flowEndReason; Flowcorder's numbers). */
export const STATE = {
  NEW: 1,
  ESTABLISHED: 2,
  UPDATE: 3,
  FINISHED: 4,
  BROKEN: 5,
  UNREACHABLE: 6,
  DESYNC: 7,
} as const;

/** One of STATE's values. */
export type State = (typeof STATE)[keyof typeof STATE];

/** State names by number (as the collector's API spells them). */
export const STATE_NAME: Readonly<Record<State, string>> = {
  1: 'NEW',
  2: 'ESTABLISHED',
  3: 'UPDATE',
  4: 'FINISHED',
  5: 'BROKEN',
  6: 'UNREACHABLE',
  7: 'DESYNC',
};

/** Every state, in wire order. */
export const STATES: readonly State[] = [1, 2, 3, 4, 5, 6, 7];

/** True for states a connection never leaves (its last profile was emitted). */
export function isTerminal(s: State): boolean {
  return s === STATE.FINISHED || s === STATE.BROKEN || s === STATE.UNREACHABLE;
}

/** Linux TCP states (include/net/tcp_states.h), as probe events carry them. */
export const TCP_STATE = {
  ESTABLISHED: 1,
  SYN_SENT: 2,
  SYN_RECV: 3,
  FIN_WAIT1: 4,
  FIN_WAIT2: 5,
  TIME_WAIT: 6,
  CLOSE: 7,
  CLOSE_WAIT: 8,
  LAST_ACK: 9,
  LISTEN: 10,
  CLOSING: 11,
  NEW_SYN_RECV: 12,
} as const;

/** Linux congestion-avoidance state Open (TCP_CA_Open): the connection is not recovering. */
export const TCP_CA_OPEN = 0;

/**
 * What an event means to the life-cycle:
 * - established: the three-way handshake completed;
 * - stall: a retransmission timeout fired with data pending;
 * - recovered: the congestion-avoidance state went back to Open;
 * - fin: the connection closed through the FIN exchange (or its socket died after FIN states);
 * - reset: a reset was sent or received;
 * - abort: the socket closed with neither FIN exchange nor reset seen (timeout, error);
 * - activeTimeout: the profile window is older than the active timeout;
 * - lost: the agent lost track (events lost, eviction, shutdown, end of a replay);
 * - observe: nothing changes, the event only updates the counters.
 */
export type FsmInput =
  | 'established'
  | 'stall'
  | 'recovered'
  | 'fin'
  | 'reset'
  | 'abort'
  | 'activeTimeout'
  | 'lost'
  | 'observe';

/** Every input, in the order of the docs' table. */
export const FSM_INPUTS: readonly FsmInput[] = [
  'established',
  'stall',
  'recovered',
  'fin',
  'reset',
  'abort',
  'activeTimeout',
  'lost',
  'observe',
];

/** A transition: the next state, and whether it closes a profile window. */
export interface Transition {
  to: State;
  profile: boolean;
}

const go = (to: State): Transition => ({ to, profile: true });

/**
 * The transition table. A missing entry means the input changes nothing in that state. Terminal
 * states have no entries: their final profile is out, only the socket's destruction (handled by
 * the table) is left. DESYNC has none either: the table resumes a desynchronised connection from
 * the next event's TCP state (`resumeState`) before looking the event up.
 */
export const TRANSITIONS: Readonly<Record<State, Readonly<Partial<Record<FsmInput, Transition>>>>> = {
  [STATE.NEW]: {
    established: go(STATE.ESTABLISHED),
    // Never established: refused (reset in SYN_SENT), timed out, or no route.
    fin: go(STATE.UNREACHABLE),
    reset: go(STATE.UNREACHABLE),
    abort: go(STATE.UNREACHABLE),
    lost: go(STATE.DESYNC),
  },
  [STATE.ESTABLISHED]: {
    stall: go(STATE.UPDATE),
    fin: go(STATE.FINISHED),
    reset: go(STATE.BROKEN),
    abort: go(STATE.BROKEN),
    activeTimeout: go(STATE.ESTABLISHED),
    lost: go(STATE.DESYNC),
  },
  [STATE.UPDATE]: {
    recovered: go(STATE.ESTABLISHED),
    fin: go(STATE.FINISHED),
    reset: go(STATE.BROKEN),
    abort: go(STATE.BROKEN),
    // A connection that stays lossy still reports periodically.
    activeTimeout: go(STATE.UPDATE),
    lost: go(STATE.DESYNC),
  },
  [STATE.FINISHED]: {},
  [STATE.BROKEN]: {},
  [STATE.UNREACHABLE]: {},
  [STATE.DESYNC]: {},
};

/**
 * The transition for `input` in `state`, or null when nothing changes. When the input itself
 * changes nothing and the window is due (older than the active timeout), the active timeout
 * applies instead, so a busy connection reports on time without waiting for an iterator scan.
 */
export function next(state: State, input: FsmInput, windowDue = false): Transition | null {
  const t = TRANSITIONS[state][input];
  if (t) return t;
  if (windowDue && input !== 'lost') return TRANSITIONS[state].activeTimeout ?? null;
  return null;
}

/** The state a connection is in after a DESYNC, judged from its next event's TCP state. */
export function resumeState(tcpState: number): State {
  return tcpState === TCP_STATE.SYN_SENT ||
    tcpState === TCP_STATE.SYN_RECV ||
    tcpState === TCP_STATE.NEW_SYN_RECV
    ? STATE.NEW
    : STATE.ESTABLISHED;
}

/**
 * The socket's TCP state just before `ev` happened: a state change carries the old state, and a
 * handshake callback comes from a socket that was still in its handshake. Resuming from it lets
 * the event itself still make its transition.
 */
export function tcpStateBefore(ev: ProbeEvent): number {
  if (ev.kind === EVENT_KIND.state) return ev.arg0;
  if (ev.kind === EVENT_KIND.activeEstablished) return TCP_STATE.SYN_SENT;
  if (ev.kind === EVENT_KIND.passiveEstablished) return TCP_STATE.SYN_RECV;
  return ev.tcpState;
}

/** TCP states after the local or remote side sent its FIN: a close from them is orderly. */
const FIN_STATES: ReadonlySet<number> = new Set([
  TCP_STATE.FIN_WAIT1,
  TCP_STATE.FIN_WAIT2,
  TCP_STATE.TIME_WAIT,
  TCP_STATE.CLOSING,
  TCP_STATE.LAST_ACK,
]);

/** True when `tcpState` is one of the states after a FIN was sent or acknowledged. */
export function isFinState(tcpState: number): boolean {
  return FIN_STATES.has(tcpState);
}

/** What the classifier needs to know of the connection besides the event. */
export interface ClassifyContext {
  /** The connection went through a FIN state (its close is orderly unless a reset came). */
  sawFin: boolean;
  /** A reset was seen on the connection. */
  resetSeen: boolean;
}

/** The FSM input an event stands for. Pure: the same event and context give the same input. */
export function classify(ev: ProbeEvent, ctx: ClassifyContext): FsmInput {
  switch (ev.kind) {
    case EVENT_KIND.activeEstablished:
    case EVENT_KIND.passiveEstablished:
      return 'established';
    case EVENT_KIND.state: {
      const from = ev.arg0;
      const to = ev.arg1;
      if (to === TCP_STATE.ESTABLISHED)
        return from === TCP_STATE.SYN_SENT || from === TCP_STATE.SYN_RECV ? 'established' : 'observe';
      if (to === TCP_STATE.TIME_WAIT) return ctx.resetSeen ? 'reset' : 'fin';
      if (to === TCP_STATE.CLOSE) {
        if (ctx.resetSeen) return 'reset';
        return isFinState(from) ? 'fin' : 'abort';
      }
      return 'observe';
    }
    case EVENT_KIND.rto:
      // An RTO with nothing outstanding is no stall; a kernel that cannot say counts it as one
      // (the retransmission timer runs only while data is outstanding).
      return ev.counters.unackedBytes > 0 || ev.missing.includes('unackedBytes') ? 'stall' : 'observe';
    case EVENT_KIND.congState:
      return ev.arg1 === TCP_CA_OPEN ? 'recovered' : 'observe';
    case EVENT_KIND.resetSent:
    case EVENT_KIND.resetReceived:
      return 'reset';
    case EVENT_KIND.destroy:
      if (ctx.resetSeen) return 'reset';
      return ctx.sawFin || isFinState(ev.tcpState) ? 'fin' : 'abort';
    default:
      return 'observe';
  }
}
