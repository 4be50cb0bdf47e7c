/**
 * Progress for logs (stderr is not a terminal: nohup, CI, a pipe): plain lines, one per task at most every
 * `intervalMs`, plus the first and the last, so a log file stays readable.
 */
import { CoreEvent, ProgressEvent } from '../../core/events';
import { formatEventLine, formatProgressLine, RateMeter } from './format';
import { EventRenderer } from './renderer';

interface TaskState {
  readonly meter: RateMeter;
  last: ProgressEvent;
  lastPrinted: number;
}

export class PlainRenderer implements EventRenderer {
  private readonly tasks = new Map<string, TaskState>();

  constructor(
    private readonly writeLine: (line: string) => void,
    private readonly intervalMs = 10_000,
  ) {}

  handle(event: CoreEvent): void {
    if (event.type === 'progress') return this.progress(event);
    if (event.type === 'done') return this.finish(event.task);
    const line = formatEventLine(event);
    if (line !== undefined) this.writeLine(line);
  }

  close(): void {
    for (const task of [...this.tasks.keys()]) this.finish(task);
  }

  private progress(event: ProgressEvent): void {
    const now = Date.now();
    let state = this.tasks.get(event.task);
    if (state === undefined) {
      state = { meter: new RateMeter(), last: event, lastPrinted: -Infinity };
      this.tasks.set(event.task, state);
    }
    state.meter.add(event.step, now);
    state.last = event;
    if (now - state.lastPrinted >= this.intervalMs) {
      state.lastPrinted = now;
      this.writeLine(formatProgressLine(event, state.meter));
    }
  }

  private finish(task: string): void {
    const state = this.tasks.get(task);
    if (state === undefined) return;
    this.tasks.delete(task);
    this.writeLine(formatProgressLine(state.last, state.meter));
  }
}
