/**
 * The FSM, exhaustively: every state × input against a table written out here independently of
 * agent/fsm.ts (so a change to either shows), the active-timeout rule, the classifier for every
 * event kind and TCP state change that matters, and the resume rule after a DESYNC.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import {
  type ClassifyContext,
  classify,
  EVENT_KIND,
  FSM_INPUTS,
  type FsmInput,
  next,
  resumeState,
  STATE_NAME,
  STATES,
  TCP_STATE,
  tcpStateBefore,
} from '../../agent/index.js';
import { SyntheticSocket } from '../helpers/synthetic-events.js';

type Name = 'NEW' | 'ESTABLISHED' | 'UPDATE' | 'FINISHED' | 'BROKEN' | 'UNREACHABLE' | 'DESYNC';
const num = (n: Name) => STATES.find((s) => STATE_NAME[s] === n)!;

/**
 * Expected transitions: `-` is "nothing happens"; a name is the next state, with a profile.
 * Columns: established stall recovered fin reset abort activeTimeout lost observe.
 */
const EXPECTED: Record<Name, string> = {
  NEW: 'ESTABLISHED - - UNREACHABLE UNREACHABLE UNREACHABLE - DESYNC -',
  ESTABLISHED: '- UPDATE - FINISHED BROKEN BROKEN ESTABLISHED DESYNC -',
  // A stray "established" in UPDATE (a duplicate sockops callback) changes nothing.
  UPDATE: '- - ESTABLISHED FINISHED BROKEN BROKEN UPDATE DESYNC -',
  FINISHED: '- - - - - - - - -',
  BROKEN: '- - - - - - - - -',
  UNREACHABLE: '- - - - - - - - -',
  DESYNC: '- - - - - - - - -',
};

const INPUT_ORDER: FsmInput[] = [
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

describe('FSM transition table', () => {
  it('the numbers on the wire are Flowcorder’s', () => {
    assert.deepEqual(
      STATES.map((s) => [s, STATE_NAME[s]]),
      [
        [1, 'NEW'],
        [2, 'ESTABLISHED'],
        [3, 'UPDATE'],
        [4, 'FINISHED'],
        [5, 'BROKEN'],
        [6, 'UNREACHABLE'],
        [7, 'DESYNC'],
      ],
    );
    assert.deepEqual([...FSM_INPUTS].sort(), [...INPUT_ORDER].sort());
  });

  for (const [name, row] of Object.entries(EXPECTED) as [Name, string][]) {
    it(`${name}: every input leads where the life-cycle says, each move with a profile`, () => {
      const cells = row.split(' ');
      assert.equal(cells.length, INPUT_ORDER.length);
      INPUT_ORDER.forEach((input, i) => {
        const t = next(num(name), input);
        const want = cells[i]!;
        if (want === '-') assert.equal(t, null, `${name} + ${input}`);
        else assert.deepEqual(t, { to: num(want as Name), profile: true }, `${name} + ${input}`);
      });
    });
  }

  it('a due window turns "nothing happens" into the active timeout, only where one exists', () => {
    for (const s of STATES) {
      for (const input of INPUT_ORDER) {
        const plain = next(s, input);
        const due = next(s, input, true);
        if (plain !== null) assert.deepEqual(due, plain, `${STATE_NAME[s]} + ${input}: the input wins`);
        else if (input === 'lost') assert.equal(due, null);
        else if (STATE_NAME[s] === 'ESTABLISHED' || STATE_NAME[s] === 'UPDATE')
          assert.deepEqual(due, { to: s, profile: true }, `${STATE_NAME[s]} + ${input} when due`);
        else assert.equal(due, null, `${STATE_NAME[s]} has no active timeout`);
      }
    }
  });

  it('after a DESYNC the connection resumes from its TCP state', () => {
    assert.equal(resumeState(TCP_STATE.SYN_SENT), num('NEW'));
    assert.equal(resumeState(TCP_STATE.SYN_RECV), num('NEW'));
    for (const s of [
      TCP_STATE.ESTABLISHED,
      TCP_STATE.FIN_WAIT1,
      TCP_STATE.CLOSE_WAIT,
      TCP_STATE.LAST_ACK,
      TCP_STATE.CLOSING,
    ])
      assert.equal(resumeState(s), num('ESTABLISHED'));
  });
});

describe('FSM classifier', () => {
  const plain: ClassifyContext = { sawFin: false, resetSeen: false };
  const afterFin: ClassifyContext = { sawFin: true, resetSeen: false };
  const afterReset: ClassifyContext = { sawFin: false, resetSeen: true };
  const s = () => new SyntheticSocket({ cookie: 1n, tcpState: TCP_STATE.ESTABLISHED });
  const state = (from: number, to: number) => s().event(EVENT_KIND.state, from, to);

  it('handshake completion, from sockops or from the state change', () => {
    assert.equal(classify(s().event(EVENT_KIND.activeEstablished), plain), 'established');
    assert.equal(classify(s().event(EVENT_KIND.passiveEstablished), plain), 'established');
    assert.equal(classify(state(TCP_STATE.SYN_SENT, TCP_STATE.ESTABLISHED), plain), 'established');
    assert.equal(classify(state(TCP_STATE.SYN_RECV, TCP_STATE.ESTABLISHED), plain), 'established');
  });

  it('closes: through FIN states is orderly, straight from ESTABLISHED or CLOSE_WAIT is an abort', () => {
    for (const from of [
      TCP_STATE.FIN_WAIT1,
      TCP_STATE.FIN_WAIT2,
      TCP_STATE.CLOSING,
      TCP_STATE.LAST_ACK,
      TCP_STATE.TIME_WAIT,
    ])
      assert.equal(classify(state(from, TCP_STATE.CLOSE), plain), 'fin', `from ${from}`);
    assert.equal(classify(state(TCP_STATE.FIN_WAIT2, TCP_STATE.TIME_WAIT), plain), 'fin');
    assert.equal(classify(state(TCP_STATE.ESTABLISHED, TCP_STATE.CLOSE), plain), 'abort');
    assert.equal(classify(state(TCP_STATE.CLOSE_WAIT, TCP_STATE.CLOSE), plain), 'abort');
    assert.equal(classify(state(TCP_STATE.SYN_SENT, TCP_STATE.CLOSE), plain), 'abort');
    assert.equal(classify(state(TCP_STATE.FIN_WAIT1, TCP_STATE.CLOSE), afterReset), 'reset');
  });

  it('intermediate state changes only observe', () => {
    for (const [from, to] of [
      [TCP_STATE.ESTABLISHED, TCP_STATE.FIN_WAIT1],
      [TCP_STATE.FIN_WAIT1, TCP_STATE.FIN_WAIT2],
      [TCP_STATE.ESTABLISHED, TCP_STATE.CLOSE_WAIT],
      [TCP_STATE.CLOSE_WAIT, TCP_STATE.LAST_ACK],
      [TCP_STATE.CLOSE, TCP_STATE.SYN_SENT],
      [TCP_STATE.FIN_WAIT1, TCP_STATE.ESTABLISHED],
    ])
      assert.equal(classify(state(from!, to!), plain), 'observe', `${from} -> ${to}`);
  });

  it('an RTO is a stall only with data pending, or when the kernel cannot say', () => {
    const sock = s();
    sock.counters.unackedBytes = 1000;
    assert.equal(classify(sock.event(EVENT_KIND.rto), plain), 'stall');
    sock.counters.unackedBytes = 0;
    assert.equal(classify(sock.event(EVENT_KIND.rto), plain), 'observe');
    const blind = new SyntheticSocket({ cookie: 2n, missing: ['unackedBytes'] });
    assert.equal(classify(blind.event(EVENT_KIND.rto), plain), 'stall');
  });

  it('recovery is the CA state going back to Open, nothing else', () => {
    assert.equal(classify(s().event(EVENT_KIND.congState, 4, 0), plain), 'recovered');
    assert.equal(classify(s().event(EVENT_KIND.congState, 0, 1), plain), 'observe');
    assert.equal(classify(s().event(EVENT_KIND.congState, 3, 4), plain), 'observe');
  });

  it('resets, destruction, and the events that only carry counters', () => {
    assert.equal(classify(s().event(EVENT_KIND.resetSent), plain), 'reset');
    assert.equal(classify(s().event(EVENT_KIND.resetReceived), plain), 'reset');
    assert.equal(classify(s().event(EVENT_KIND.destroy), plain), 'abort');
    assert.equal(classify(s().event(EVENT_KIND.destroy), afterFin), 'fin');
    assert.equal(classify(s().event(EVENT_KIND.destroy), afterReset), 'reset');
    for (const k of [EVENT_KIND.connect, EVENT_KIND.duplicate, EVENT_KIND.badChecksum, EVENT_KIND.snapshot])
      assert.equal(classify(s().event(k), plain), 'observe', `kind ${k}`);
  });
});

describe('resuming after a DESYNC', () => {
  it('takes the TCP state from before the event, so the event still makes its transition', () => {
    const s = new SyntheticSocket({ cookie: 1n, tcpState: TCP_STATE.ESTABLISHED });
    assert.equal(tcpStateBefore(s.event(EVENT_KIND.state, TCP_STATE.SYN_SENT, TCP_STATE.ESTABLISHED)), 2);
    assert.equal(tcpStateBefore(s.event(EVENT_KIND.activeEstablished)), TCP_STATE.SYN_SENT);
    assert.equal(tcpStateBefore(s.event(EVENT_KIND.passiveEstablished)), TCP_STATE.SYN_RECV);
    assert.equal(tcpStateBefore(s.event(EVENT_KIND.duplicate)), TCP_STATE.ESTABLISHED);
  });
});
