/**
 * What happened in the control plane, as data: a bounded feed of events (joins, votes, re-forms, drops, commits,
 * aborts, syncs) and monotonic counters. The master logs every event from here, and a metrics endpoint, a
 * dashboard or a test reads the same records.
 */
import type { LogFields, LogLevel } from '../log';

/** One thing that happened. `what` is a short stable phrase (e.g. `peer dropped`); `fields` say to whom and why. */
export interface FeedEvent {
  /** Increases by one per event, across the master's life. */
  seq: number;
  /** Milliseconds (the coordinator's clock). */
  at: number;
  level: Exclude<LogLevel, 'silent'>;
  what: string;
  fields: LogFields;
}

/** Monotonic counts since the master started. */
export interface Counters {
  peersJoined: number;
  peersAccepted: number;
  peersDropped: number;
  peersLeft: number;
  reforms: number;
  votesPassed: number;
  votesTimedOut: number;
  opsCommitted: number;
  /** Operations failed on every peer by a peer's report. */
  opsAborted: number;
  /** Operations in flight (some member done) when their epoch ended. */
  opsSuperseded: number;
  syncsCommitted: number;
  syncsFailed: number;
  syncRetries: number;
}

export type FeedListener = (event: FeedEvent) => void;

export class Feed {
  private readonly events: FeedEvent[] = [];
  private readonly listeners = new Set<FeedListener>();
  private seq = 0;
  readonly counters: Counters = {
    peersJoined: 0, peersAccepted: 0, peersDropped: 0, peersLeft: 0, reforms: 0, votesPassed: 0, votesTimedOut: 0,
    opsCommitted: 0, opsAborted: 0, opsSuperseded: 0, syncsCommitted: 0, syncsFailed: 0, syncRetries: 0,
  };

  /** `capacity`: how many recent events are kept for {@link Feed.recent}. */
  constructor(private readonly now: () => number, private readonly capacity = 1000) {}

  emit(level: FeedEvent['level'], what: string, fields: LogFields = {}): void {
    const e: FeedEvent = { seq: ++this.seq, at: this.now(), level, what, fields };
    this.events.push(e);
    if (this.events.length > this.capacity) this.events.shift();
    for (const l of this.listeners) l(e);
  }

  count(counter: keyof Counters, by = 1): void {
    this.counters[counter] += by;
  }

  /** The kept events after `seq` (all kept events by default), oldest first. */
  recent(afterSeq = 0): FeedEvent[] {
    return this.events.filter((e) => e.seq > afterSeq);
  }

  /** Calls `listener` for every later event; returns the unsubscribe function. */
  subscribe(listener: FeedListener): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }
}
