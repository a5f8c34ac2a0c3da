/**
 * The campaign's history: one JSON object per line, written as things happen and read back by
 * the checker. Like a Jepsen history it records what clients asked and what they were told
 * (including "no answer"), plus what the nemesis did, so a verdict can be traced to lines.
 */
import { createWriteStream, type WriteStream } from 'node:fs';
import { readFile } from 'node:fs/promises';
import type { FaultKind, PlannedFault } from './schedule.js';

/** The workload operations that go through the HTTP API. */
export type ClientOp = 'open' | 'rename' | 'transfer' | 'poison' | 'tokens';

/** The campaign's parameters, first line of every history. */
export interface MetaEvent {
  type: 'meta';
  time: number;
  startedAt: string;
  seed: number;
  options: Record<string, unknown>;
  plan: PlannedFault[];
}

/**
 * One HTTP request and its answer. `status` is null when no answer came (connection refused or
 * reset, timeout): the request may or may not have taken effect (Jepsen's `:info`).
 */
export interface RequestEvent {
  type: 'request';
  /** When the answer (or the failure) came, ms since the campaign started. */
  time: number;
  /** When the request was sent, ms since the campaign started. */
  invokedAt: number;
  client: number;
  op: ClientOp;
  /** The Idempotency-Key; absent for token requests. */
  token?: string;
  request: { name: string; data: unknown } | { count: number };
  /** True when this token was sent before (a client retry or a deliberate replay). */
  retry: boolean;
  status: number | null;
  body: unknown;
  /** The `Idempotent-Replayed` header was `true`. */
  replayed?: boolean;
  /** Why there was no answer. */
  error?: string;
}

/** A second BullMQ job with another job id and the same envelope: a duplicate enqueue. */
export interface DuplicateEvent {
  type: 'duplicate';
  time: number;
  messageId: string;
  jobId: string;
  name: string;
  ok: boolean;
  error?: string;
}

/** A job put on the queue directly, bypassing the API, with data its schema refuses. */
export interface RawPoisonEvent {
  type: 'poison-raw';
  time: number;
  messageId: string;
  jobId: string;
  name: string;
  data: unknown;
  ok: boolean;
  error?: string;
}

/** The nemesis starting or healing a fault. */
export interface FaultEvent {
  type: 'fault';
  time: number;
  index: number;
  kind: FaultKind;
  phase: 'start' | 'heal';
  target?: number;
  detail?: string;
}

/** A child process (API, worker, Redis) starting or exiting. */
export interface ProcessEvent {
  type: 'process';
  time: number;
  name: string;
  event: 'started' | 'exited';
  pid?: number;
  code?: number | null;
  signal?: string | null;
  /** False when the process exited without the nemesis asking: a crash worth reading. */
  expected?: boolean;
}

/** A phase of the run (workload over, drained). */
export interface PhaseEvent {
  type: 'phase';
  time: number;
  phase: 'workload-done' | 'faults-healed' | 'drained';
  detail?: Record<string, unknown>;
}

export type HistoryEvent =
  | MetaEvent
  | RequestEvent
  | DuplicateEvent
  | RawPoisonEvent
  | FaultEvent
  | ProcessEvent
  | PhaseEvent;

/** Appends events to a JSON-lines file. */
export class HistoryWriter {
  private readonly stream: WriteStream;
  private readonly startMs: number;
  private closed = false;
  /** Events written so far. */
  count = 0;

  constructor(
    readonly file: string,
    startMs: number = Date.now(),
  ) {
    this.startMs = startMs;
    this.stream = createWriteStream(file, { flags: 'w' });
    this.stream.on('error', () => undefined);
  }

  /** Milliseconds since the campaign started: the `time` of events. */
  now(): number {
    return Date.now() - this.startMs;
  }

  /** Writes one event; `time` defaults to now. */
  write<E extends HistoryEvent>(event: Omit<E, 'time'> & { time?: number }): void {
    if (this.closed) return;
    const line = JSON.stringify({ time: this.now(), ...event });
    this.stream.write(`${line}\n`);
    this.count++;
  }

  /** Flushes and closes the file. */
  close(): Promise<void> {
    if (this.closed) return Promise.resolve();
    this.closed = true;
    return new Promise((resolve, reject) => {
      this.stream.end((err?: Error | null) => (err ? reject(err) : resolve()));
    });
  }
}

/** Reads a history file; a truncated last line (a killed writer) is ignored. */
export async function readHistory(file: string): Promise<HistoryEvent[]> {
  return parseHistory(await readFile(file, 'utf8'));
}

/** Parses JSON lines into events. */
export function parseHistory(text: string): HistoryEvent[] {
  const lines = text.split('\n');
  const events: HistoryEvent[] = [];
  lines.forEach((line, i) => {
    if (!line.trim()) return;
    try {
      events.push(JSON.parse(line) as HistoryEvent);
    } catch (err) {
      if (i < lines.length - 1 && lines.slice(i + 1).some((l) => l.trim())) throw err;
    }
  });
  return events;
}
