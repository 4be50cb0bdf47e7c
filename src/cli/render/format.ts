/** Text for events, shared by the TTY and plain renderers. */
import { CoreEvent, ProgressEvent } from '../../core/events';

/** `loss 3.214 lr 1.00e-4`: four significant digits, exponent form for very small or large values. */
export function formatMetrics(metrics: Readonly<Record<string, number>> | undefined): string {
  if (metrics === undefined) return '';
  return Object.entries(metrics)
    .map(([name, value]) => `${name} ${formatNumber(value)}`)
    .join(' ');
}

export function formatNumber(value: number): string {
  if (Number.isInteger(value) && Math.abs(value) < 1e6) return String(value);
  const magnitude = Math.abs(value);
  if (magnitude !== 0 && (magnitude < 1e-3 || magnitude >= 1e6)) return value.toExponential(2);
  return String(Number(value.toPrecision(4)));
}

/** `2.51 update/s`, or `3.20 s/update` when a step takes longer than a second (training on a CPU). */
export function formatRate(stepsPerSecond: number | undefined, unit: string): string {
  if (stepsPerSecond === undefined || !Number.isFinite(stepsPerSecond) || stepsPerSecond <= 0) return `- ${unit}/s`;
  return stepsPerSecond >= 1
    ? `${stepsPerSecond.toFixed(2)} ${unit}/s`
    : `${(1 / stepsPerSecond).toFixed(2)} s/${unit}`;
}

/** `45s`, `12m05s`, `3h07m`, `2d04h`. */
export function formatDuration(seconds: number | undefined): string {
  if (seconds === undefined || !Number.isFinite(seconds) || seconds < 0) return '-';
  const s = Math.round(seconds);
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m${pad(s % 60)}s`;
  if (s < 86400) return `${Math.floor(s / 3600)}h${pad(Math.floor(s / 60) % 60)}m`;
  return `${Math.floor(s / 86400)}d${pad(Math.floor(s / 3600) % 24)}h`;
}

function pad(value: number): string {
  return String(value).padStart(2, '0');
}

/**
 * Steps per second over a sliding window of recent events, so the first slow steps (allocation, warm-up) stop
 * weighing on the rate and ETA after a while.
 */
export class RateMeter {
  private readonly samples: { time: number; step: number }[] = [];

  constructor(private readonly windowSize = 50) {}

  add(step: number, time = Date.now()): void {
    this.samples.push({ time, step });
    if (this.samples.length > this.windowSize) this.samples.shift();
  }

  /** Steps per second, or undefined before two samples. */
  rate(): number | undefined {
    if (this.samples.length < 2) return undefined;
    const first = this.samples[0];
    const last = this.samples[this.samples.length - 1];
    const seconds = (last.time - first.time) / 1000;
    return seconds > 0 ? (last.step - first.step) / seconds : undefined;
  }

  /** Seconds left to reach `total` at the current rate. */
  eta(total: number | undefined): number | undefined {
    const rate = this.rate();
    const last = this.samples[this.samples.length - 1];
    if (total === undefined || rate === undefined || rate <= 0 || last === undefined) return undefined;
    return (total - last.step) / rate;
  }
}

/** `train 1200/20000 update (6%) | 2.51 update/s | ETA 2h05m | loss 3.214`: one progress line for logs. */
export function formatProgressLine(event: ProgressEvent, meter: RateMeter): string {
  const unit = event.unit ?? 'step';
  const count =
    event.total === undefined
      ? `${event.step} ${unit}`
      : `${event.step}/${event.total} ${unit} (${Math.floor((100 * event.step) / Math.max(event.total, 1))}%)`;
  const parts = [`${event.task} ${count}`, formatRate(meter.rate(), unit)];
  if (event.total !== undefined) parts.push(`ETA ${formatDuration(meter.eta(event.total))}`);
  const metrics = formatMetrics(event.metrics);
  if (metrics !== '') parts.push(metrics);
  return parts.join(' | ');
}

/** The text line for every event but progress (which has bars), or undefined for events not shown to people. */
export function formatEventLine(event: Exclude<CoreEvent, ProgressEvent>): string | undefined {
  switch (event.type) {
    case 'stage':
      return event.detail === undefined ? `== ${event.name}` : `== ${event.name}: ${event.detail}`;
    case 'log':
      if (event.level === 'debug') return undefined;
      return event.level === 'warn' ? `Warning: ${event.message}` : event.message;
    case 'metrics':
      return `${event.split}${event.step === undefined ? '' : ` @ ${event.step}`}: ${formatMetrics(event.values)}`;
    case 'artifact':
      return `wrote ${event.kind}: ${event.path}`;
    case 'done':
      return undefined;
  }
}
