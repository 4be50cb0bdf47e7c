/**
 * FID, KID and the Inception Score over image folders at one or more blur radii, and their report: a JSON file with
 * every number and what it was measured with, and an HTML page with the values against the blur radius as an inline
 * SVG chart (no scripts, no external files: it opens anywhere, offline).
 */
import * as path from 'node:path';
import { DataError } from '../data/errors';
import { SkipSummary } from '../data/skips';
import { EventSink, silentSink } from '../events';
import { writeFileAtomicSync } from '../io/atomic';
import { makeOutputFolder, preflightOutputFile } from '../io/preflight';
import { blurSigma } from './blur';
import { ExtractedSet, FeatureExtractor, extractFromDataset } from './features';
import { featureStats, frechetDistance } from './fid';
import { inceptionScore, softmaxRows } from './inception-score';
import { kid } from './kid';

export type ImageMetric = 'fid' | 'kid' | 'is';

export const METRIC_TITLES: Readonly<Record<ImageMetric, string>> = {
  fid: 'Fréchet Inception Distance (lower is better)',
  kid: 'Kernel Inception Distance (lower is better)',
  is: 'Inception Score (higher is better)',
};

export interface ImageMetricOptions {
  readonly metric: ImageMetric;
  /** Reference images (FID, KID). */
  readonly real?: string;
  /** Images to measure (samples). */
  readonly fake: string;
  readonly extractor: FeatureExtractor;
  /** Blur radii (0 = none); one point of the curve each. */
  readonly radii?: readonly number[];
  readonly batchSize?: number;
  /** Use only the first N images of each set (0 = all). */
  readonly limit?: number;
  readonly kidSubsets?: number;
  readonly kidSubsetSize?: number;
  readonly seed?: number;
  readonly splits?: number;
  readonly events?: EventSink;
}

export interface MetricPoint {
  readonly radius: number;
  readonly sigma: number;
  readonly value: number;
  /** KID: std over subsets; IS: std over splits. */
  readonly std?: number;
  /** FID: |mu1 - mu2|^2 and the covariance term. */
  readonly meanTerm?: number;
  readonly covTerm?: number;
}

export interface SetSummary {
  readonly path: string;
  readonly images: number;
  readonly skipped: SkipSummary;
}

export interface MetricReport {
  readonly metric: ImageMetric;
  readonly title: string;
  readonly extractor: { readonly name: string; readonly output: string; readonly inputSize: number; readonly dim: number };
  readonly real?: SetSummary;
  readonly fake: SetSummary;
  readonly blur: { readonly radii: readonly number[]; readonly sigma: string };
  readonly settings: Readonly<Record<string, number>>;
  readonly points: readonly MetricPoint[];
  readonly createdAt: string;
}

export const SIGMA_RULE = 'sigma = radius (Pillow GaussianBlur radius = standard deviation; sharp blur(sigma)), at the image\'s own resolution, before resizing';

function summary(set: ExtractedSet): SetSummary {
  return { path: set.path, images: set.count, skipped: set.skipped };
}

/** Measures `metric` at each blur radius (both sets blurred alike). */
export async function runImageMetric(options: ImageMetricOptions): Promise<MetricReport> {
  const { metric, extractor } = options;
  const events = options.events ?? silentSink;
  const radii = options.radii && options.radii.length > 0 ? [...options.radii] : [0];
  for (const r of radii) blurSigma(r);
  if (metric !== 'is' && options.real === undefined) throw new DataError(`${metric.toUpperCase()} compares two image sets`, 'give the reference images with --real DIR');
  if (metric === 'is' && extractor.logits === undefined) {
    throw new DataError(
      `the Inception Score needs class probabilities, and ${extractor.name} has no classifier`,
      'give a classifier model with --model FILE.onnx (and its logits output with --logits-output NAME)',
    );
  }
  const points: MetricPoint[] = [];
  let realSet: ExtractedSet | undefined;
  let fakeSet: ExtractedSet | undefined;
  const extract = (dataPath: string, radius: number, label: string): Promise<ExtractedSet> =>
    extractFromDataset(extractor, dataPath, {
      blurRadius: radius,
      batchSize: options.batchSize,
      limit: options.limit,
      output: metric === 'is' ? 'logits' : 'features',
      events,
      task: `${label} (blur ${radius})`,
    });
  for (const radius of radii) {
    events.emit({ type: 'stage', name: `blur radius ${radius}`, detail: `sigma ${blurSigma(radius)}` });
    fakeSet = await extract(options.fake, radius, 'fake');
    let point: MetricPoint;
    if (metric === 'is') {
      const probs = extractor.outputsProbabilities ? fakeSet.data : softmaxRows(fakeSet.data, fakeSet.count, fakeSet.dim);
      const r = inceptionScore(probs, fakeSet.count, fakeSet.dim, Math.min(options.splits ?? 10, fakeSet.count));
      point = { radius, sigma: blurSigma(radius), value: r.score, std: r.std };
    } else {
      realSet = await extract(options.real!, radius, 'real');
      if (realSet.dim !== fakeSet.dim) throw new Error(`dalle: ${realSet.dim}- and ${fakeSet.dim}-dimensional features from one extractor`);
      if (metric === 'fid') {
        const r = frechetDistance(featureStats(realSet.data, realSet.count, realSet.dim), featureStats(fakeSet.data, fakeSet.count, fakeSet.dim));
        point = { radius, sigma: blurSigma(radius), value: r.fid, meanTerm: r.meanTerm, covTerm: r.covTerm };
      } else {
        const r = kid(realSet.data, realSet.count, fakeSet.data, fakeSet.count, realSet.dim, {
          subsets: options.kidSubsets,
          subsetSize: options.kidSubsetSize,
          seed: options.seed,
        });
        point = { radius, sigma: blurSigma(radius), value: r.kid, std: r.std };
      }
    }
    points.push(point);
    events.emit({ type: 'metrics', split: `blur ${radius}`, values: { [metric]: point.value, ...(point.std !== undefined ? { std: point.std } : {}) } });
  }
  const settings: Record<string, number> = { batchSize: options.batchSize ?? 32 };
  if (metric === 'kid') {
    settings.subsets = options.kidSubsets ?? 100;
    settings.subsetSize = Math.min(options.kidSubsetSize ?? 1000, realSet!.count, fakeSet!.count);
    settings.seed = options.seed ?? 0;
  }
  if (metric === 'is') settings.splits = Math.min(options.splits ?? 10, fakeSet!.count);
  return {
    metric,
    title: METRIC_TITLES[metric],
    extractor: { name: extractor.name, output: extractor.outputName(metric === 'is' ? 'logits' : 'features'), inputSize: extractor.inputSize, dim: fakeSet!.dim },
    ...(realSet ? { real: summary(realSet) } : {}),
    fake: summary(fakeSet!),
    blur: { radii, sigma: SIGMA_RULE },
    settings,
    points,
    createdAt: new Date().toISOString(),
  };
}

export function escapeHtml(text: string): string {
  return text.replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[c]!);
}

/** A number for a label: 4 significant digits, no exponent for ordinary magnitudes. */
export function fmt(v: number): string {
  if (!Number.isFinite(v)) return String(v);
  const a = Math.abs(v);
  return a !== 0 && (a < 1e-3 || a >= 1e6) ? v.toExponential(3) : String(Number(v.toPrecision(4)));
}

/** "Nice" axis ticks covering [lo, hi]. */
function ticks(lo: number, hi: number, count = 5): number[] {
  if (hi <= lo) return [lo];
  const raw = (hi - lo) / count;
  const mag = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 2.5, 5, 10].map((m) => m * mag).find((s) => s >= raw) ?? raw;
  const out: number[] = [];
  for (let t = Math.ceil(lo / step) * step; t <= hi + step * 1e-9; t += step) out.push(Number(t.toPrecision(12)));
  return out;
}

/** One line of a chart: its points and, when the chart has several, its name in the legend. */
export interface ChartSeries {
  readonly label?: string;
  readonly points: readonly MetricPoint[];
}

const SERIES_COLOURS = ['#1f77b4', '#ff7f0e', '#2ca02c', '#d62728'];

/** The metric against the blur radius as an SVG line chart, with error bars where a std is known. */
export function svgChart(points: readonly MetricPoint[], yLabel: string): string {
  return svgChartSeries([{ points }], yLabel);
}

/** Several series against the blur radius on one pair of axes (a legend names the labelled ones). */
export function svgChartSeries(series: readonly ChartSeries[], yLabel: string): string {
  const width = 640;
  const height = 360;
  const m = { left: 70, right: 20, top: 20, bottom: 50 };
  const all = series.flatMap((s) => s.points);
  const xs = [...new Set(all.map((p) => p.radius))];
  const lows = all.map((p) => p.value - (p.std ?? 0));
  const highs = all.map((p) => p.value + (p.std ?? 0));
  let [x0, x1] = [Math.min(...xs), Math.max(...xs)];
  if (x0 === x1) [x0, x1] = [x0 - 1, x1 + 1];
  let [y0, y1] = [Math.min(0, ...lows), Math.max(...highs)];
  if (y0 === y1) [y0, y1] = [y0 - 1, y1 + 1];
  y1 += (y1 - y0) * 0.05;
  const px = (x: number) => m.left + ((x - x0) / (x1 - x0)) * (width - m.left - m.right);
  const py = (y: number) => height - m.bottom - ((y - y0) / (y1 - y0)) * (height - m.top - m.bottom);
  const parts: string[] = [];
  parts.push(`<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" role="img" aria-label="${escapeHtml(yLabel)} against blur radius">`);
  parts.push(`<rect x="0" y="0" width="${width}" height="${height}" fill="white"/>`);
  for (const t of ticks(y0, y1)) {
    parts.push(`<line x1="${m.left}" x2="${width - m.right}" y1="${py(t).toFixed(1)}" y2="${py(t).toFixed(1)}" stroke="#ddd"/>`);
    parts.push(`<text x="${m.left - 6}" y="${(py(t) + 4).toFixed(1)}" text-anchor="end" font-size="12">${fmt(t)}</text>`);
  }
  for (const x of xs) {
    parts.push(`<line x1="${px(x).toFixed(1)}" x2="${px(x).toFixed(1)}" y1="${height - m.bottom}" y2="${height - m.bottom + 5}" stroke="#333"/>`);
    parts.push(`<text x="${px(x).toFixed(1)}" y="${height - m.bottom + 18}" text-anchor="middle" font-size="12">${fmt(x)}</text>`);
  }
  parts.push(`<line x1="${m.left}" x2="${width - m.right}" y1="${height - m.bottom}" y2="${height - m.bottom}" stroke="#333"/>`);
  parts.push(`<line x1="${m.left}" x2="${m.left}" y1="${m.top}" y2="${height - m.bottom}" stroke="#333"/>`);
  parts.push(`<text x="${(m.left + width - m.right) / 2}" y="${height - 10}" text-anchor="middle" font-size="13">blur radius (sigma, px)</text>`);
  parts.push(`<text transform="translate(16 ${(m.top + height - m.bottom) / 2}) rotate(-90)" text-anchor="middle" font-size="13">${escapeHtml(yLabel)}</text>`);
  series.forEach((s, k) => {
    const colour = SERIES_COLOURS[k % SERIES_COLOURS.length];
    const sorted = [...s.points].sort((a, b) => a.radius - b.radius);
    parts.push(`<polyline fill="none" stroke="${colour}" stroke-width="2" points="${sorted.map((p) => `${px(p.radius).toFixed(1)},${py(p.value).toFixed(1)}`).join(' ')}"/>`);
    for (const p of sorted) {
      if (p.std !== undefined && p.std > 0) {
        parts.push(`<line x1="${px(p.radius).toFixed(1)}" x2="${px(p.radius).toFixed(1)}" y1="${py(p.value - p.std).toFixed(1)}" y2="${py(p.value + p.std).toFixed(1)}" stroke="${colour}"/>`);
      }
      const name = s.label !== undefined ? `${escapeHtml(s.label)}, ` : '';
      parts.push(`<circle cx="${px(p.radius).toFixed(1)}" cy="${py(p.value).toFixed(1)}" r="4" fill="${colour}"><title>${name}radius ${fmt(p.radius)}: ${fmt(p.value)}</title></circle>`);
    }
    if (s.label !== undefined) {
      const y = m.top + 8 + 18 * k;
      parts.push(`<line x1="${width - m.right - 190}" x2="${width - m.right - 170}" y1="${y}" y2="${y}" stroke="${colour}" stroke-width="2"/>`);
      parts.push(`<text x="${width - m.right - 164}" y="${y + 4}" font-size="12">${escapeHtml(s.label)}</text>`);
    }
  });
  parts.push('</svg>');
  return parts.join('\n');
}

/** The report as a self-contained HTML page. */
export function renderHtml(report: MetricReport): string {
  const name = report.metric.toUpperCase();
  const rows = report.points
    .map((p) => `<tr><td>${fmt(p.radius)}</td><td>${fmt(p.sigma)}</td><td>${fmt(p.value)}</td><td>${p.std !== undefined ? fmt(p.std) : ''}</td></tr>`)
    .join('\n');
  const set = (label: string, s?: SetSummary) =>
    s ? `<li>${label}: <code>${escapeHtml(s.path)}</code>, ${s.images} images${s.skipped.total ? `, ${s.skipped.total} skipped` : ''}</li>` : '';
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>dalle evaluate ${report.metric}</title>
<style>body{font-family:system-ui,sans-serif;margin:2em;max-width:760px}table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:4px 10px;text-align:right}code{font-size:90%}</style>
</head><body>
<h1>${escapeHtml(report.title)}</h1>
<ul>
<li>model: <code>${escapeHtml(report.extractor.name)}</code>, output <code>${escapeHtml(report.extractor.output)}</code> (${report.extractor.inputSize} px input, ${report.extractor.dim} values per image)</li>
${set('real', report.real)}
${set('fake', report.fake)}
<li>blur: ${escapeHtml(report.blur.sigma)}</li>
<li>settings: ${escapeHtml(Object.entries(report.settings).map(([k, v]) => `${k} ${v}`).join(', '))}</li>
<li>measured ${escapeHtml(report.createdAt)}</li>
</ul>
${svgChart(report.points, name)}
<table><thead><tr><th>blur radius</th><th>sigma</th><th>${name}</th><th>std</th></tr></thead>
<tbody>
${rows}
</tbody></table>
</body></html>
`;
}

/** The files of a report `--out OUT`: OUT.json and OUT.html (a trailing .json or .html on `out` is dropped first). */
export function reportFiles(out: string): { json: string; html: string } {
  const base = out.replace(/\.(json|html)$/i, '');
  return { json: `${base}.json`, html: `${base}.html` };
}

/**
 * Checks, before the measuring, that both files of `--out OUT` can be written (io/preflight.ts): a bad path fails
 * in a second, not after the features are extracted. Their folder is created when they are written.
 */
export function preflightReport(out: string): void {
  const { json, html } = reportFiles(out);
  preflightOutputFile(json);
  preflightOutputFile(html);
}

/** Writes `OUT.json` and `OUT.html` (reportFiles), atomically, creating their folder. Returns both paths. */
export function writeMetricReport(out: string, report: MetricReport): { json: string; html: string } {
  const { json, html } = reportFiles(out);
  makeOutputFolder(path.dirname(path.resolve(json)));
  writeFileAtomicSync(json, `${JSON.stringify(report, null, 2)}\n`);
  writeFileAtomicSync(html, renderHtml(report));
  return { json, html };
}
