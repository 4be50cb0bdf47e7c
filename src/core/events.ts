/**
 * Core events: how training loops, encoders, generators and evaluators report what they are doing. The core never
 * prints; it emits these, and the CLI draws them (progress bars, or one JSON line per event under --json).
 *
 * Convention for core functions: take an `events: EventSink` option (default `silentSink`), emit a `stage` when a phase
 * begins, `progress` as work advances (at most a few times a second), `done` when a task with progress ends, and
 * `artifact` for every file written that a user may want (checkpoint, samples, config).
 */

export type LogLevel = 'debug' | 'info' | 'warn';

/** A phase of a job begins ("loading data", "training"); the CLI prints it as a heading. */
export interface StageEvent {
  readonly type: 'stage';
  readonly name: string;
  readonly detail?: string;
}

/** A task advanced: step of total (total unknown: omit it). Metrics are the current values to show beside the bar. */
export interface ProgressEvent {
  readonly type: 'progress';
  /** Names the bar; events with the same task update the same bar ("train", "encode", "generate"). */
  readonly task: string;
  readonly step: number;
  readonly total?: number;
  /** What one step is ("update", "image", "token"); default "step". */
  readonly unit?: string;
  readonly metrics?: Readonly<Record<string, number>>;
}

/** A task with progress finished (closes its bar). */
export interface DoneEvent {
  readonly type: 'done';
  readonly task: string;
}

/** Values worth a line of their own, not just a bar update (an evaluation at a step, a final loss). */
export interface MetricsEvent {
  readonly type: 'metrics';
  readonly step?: number;
  /** What was measured ("eval", "train"). */
  readonly split: string;
  readonly values: Readonly<Record<string, number>>;
}

/** A message for the user. `debug` is only shown under --json (and by renderers that ask for it). */
export interface LogEvent {
  readonly type: 'log';
  readonly level: LogLevel;
  readonly message: string;
}

/** A file a user may want was written. */
export interface ArtifactEvent {
  readonly type: 'artifact';
  /** What it is: "checkpoint", "samples", "config", "tokens", "image", "report", ... */
  readonly kind: string;
  readonly path: string;
}

export type CoreEvent = StageEvent | ProgressEvent | DoneEvent | MetricsEvent | LogEvent | ArtifactEvent;
export type CoreEventType = CoreEvent['type'];
export type CoreEventOf<T extends CoreEventType> = Extract<CoreEvent, { type: T }>;

/** What core functions take: somewhere to send events. */
export interface EventSink {
  emit(event: CoreEvent): void;
}

/** What renderers take: something to listen to. */
export interface EventSource {
  /** Calls `listener` for every event from now on; returns a function that stops it. */
  on(listener: (event: CoreEvent) => void): () => void;
}

/** Drops every event: the default for core functions called from code or tests that do not watch. */
export const silentSink: EventSink = { emit: () => undefined };

/** A tiny synchronous emitter: listeners run in subscription order, inside emit. */
export class CoreEmitter implements EventSink, EventSource {
  private readonly listeners = new Set<(event: CoreEvent) => void>();

  emit(event: CoreEvent): void {
    for (const listener of this.listeners) listener(event);
  }

  on(listener: (event: CoreEvent) => void): () => void {
    // Wrapping makes each subscription distinct, so subscribing the same function twice is two subscriptions.
    const subscription = (event: CoreEvent): void => listener(event);
    this.listeners.add(subscription);
    return () => this.listeners.delete(subscription);
  }

  /** Listens to one type of event only, with the listener typed for it. */
  onType<T extends CoreEventType>(type: T, listener: (event: CoreEventOf<T>) => void): () => void {
    return this.on((event) => {
      if (event.type === type) listener(event as CoreEventOf<T>);
    });
  }
}
