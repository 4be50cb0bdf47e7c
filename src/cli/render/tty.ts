/**
 * Progress for a terminal: one cli-progress bar per task (bar, count, rate, ETA, metrics); other events are printed
 * above the bars.
 */
import { Format, MultiBar, Options, Params, Presets, SingleBar } from 'cli-progress';
import { CoreEvent, ProgressEvent } from '../../core/events';
import { formatDuration, formatEventLine, formatMetrics, formatRate, RateMeter } from './format';
import { EventRenderer } from './renderer';

interface BarPayload {
  readonly task: string;
  readonly unit: string;
  readonly hasTotal: boolean;
  readonly rate: string;
  readonly eta: string;
  readonly metrics: string;
}

interface TaskBar {
  readonly bar: SingleBar;
  readonly meter: RateMeter;
  done: boolean;
}

export class TtyRenderer implements EventRenderer {
  private multibar: MultiBar | undefined;
  private readonly bars = new Map<string, TaskBar>();
  private taskWidth = 8;

  constructor(private readonly stream: NodeJS.WriteStream = process.stderr) {}

  handle(event: CoreEvent): void {
    if (event.type === 'progress') return this.progress(event);
    if (event.type === 'done') return this.finish(event.task);
    const line = formatEventLine(event);
    if (line === undefined) return;
    // Above the bars while they are drawn; cli-progress wants the newline.
    if (this.multibar !== undefined) this.multibar.log(`${line}\n`);
    else this.stream.write(`${line}\n`);
  }

  close(): void {
    this.multibar?.stop();
    this.multibar = undefined;
    this.bars.clear();
  }

  private progress(event: ProgressEvent): void {
    let task = this.bars.get(event.task);
    if (task === undefined || task.done) {
      this.taskWidth = Math.max(this.taskWidth, event.task.length);
      const meter = new RateMeter();
      const bar = this.ensureMultibar().create(event.total ?? 0, event.step, this.payload(event, meter));
      task = { bar, meter, done: false };
      this.bars.set(event.task, task);
    }
    task.meter.add(event.step);
    if (event.total !== undefined) task.bar.setTotal(event.total);
    task.bar.update(event.step, this.payload(event, task.meter));
  }

  private finish(taskName: string): void {
    const task = this.bars.get(taskName);
    if (task === undefined) return;
    task.done = true;
    task.bar.stop();
    // When every bar is finished, stop drawing so later output goes straight to the terminal.
    if ([...this.bars.values()].every((bar) => bar.done)) this.close();
  }

  private payload(event: ProgressEvent, meter: RateMeter): BarPayload {
    const unit = event.unit ?? 'step';
    return {
      task: event.task,
      unit,
      hasTotal: event.total !== undefined,
      rate: formatRate(meter.rate(), unit),
      eta: formatDuration(meter.eta(event.total)),
      metrics: formatMetrics(event.metrics),
    };
  }

  private ensureMultibar(): MultiBar {
    this.multibar ??= new MultiBar(
      {
        stream: this.stream,
        format: (options, params, payload) => this.formatBar(options, params, payload as BarPayload),
        hideCursor: true,
        clearOnComplete: false,
        stopOnComplete: false,
        barsize: 30,
      },
      Presets.shades_classic,
    );
    return this.multibar;
  }

  // `train    ████████░░░░ 1200/20000 update | 2.51 update/s | ETA 2h05m | loss 3.214 lr 1e-4`
  private formatBar(options: Options, params: Params, payload: BarPayload): string {
    const name = payload.task.padEnd(this.taskWidth);
    const parts = payload.hasTotal
      ? [
          `${name} ${Format.BarFormat(params.progress, options)} ${params.value}/${params.total} ${payload.unit}`,
          payload.rate,
          `ETA ${payload.eta}`,
        ]
      : [`${name} ${params.value} ${payload.unit}`, payload.rate];
    if (payload.metrics !== '') parts.push(payload.metrics);
    return parts.join(' | ');
  }
}
