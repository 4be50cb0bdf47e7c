/**
 * The text-to-image report's files: REPORT.json (every number, every sample's score and rank, and what they were
 * measured with) and REPORT.html (a table of the figures, the FID curves against the blur radius as an inline SVG
 * chart, the curve's table; no scripts, no external files). Paths as report.ts's reportFiles names them.
 */
import * as path from 'node:path';
import { writeFileAtomicSync } from '../../io/atomic';
import { makeOutputFolder } from '../../io/preflight';
import { ChartSeries, escapeHtml, fmt, reportFiles, svgChartSeries } from '../report';
import type { TextToImageReport } from './evaluate';

/** The samples folder a report generates into when it is given captions: REPORT-samples beside REPORT.json. */
export function samplesFolderFor(out: string): string {
  return reportFiles(out).json.replace(/\.json$/, '-samples');
}

const pct = (v: number): string => `${(100 * v).toFixed(1)}%`;
const pm = (v: number | null, show: (x: number) => string): string => (v === null ? '' : ` &plusmn; ${show(v)}`);

/** The report as a self-contained HTML page. */
export function renderTextToImageHtml(report: TextToImageReport): string {
  const r = report.rPrecision;
  const c = report.clipScore;
  const f = report.fid;
  const first = f.points[0];
  const gen = report.samples.generation;
  const genLine = gen
    ? Object.entries(gen)
        .filter(([k]) => ['prior', 'seed', 'samples', 'temperature', 'top_k', 'top_p', 'cond_scale', 'captions', 'runtime'].includes(k))
        .map(([k, v]) => `${k} ${typeof v === 'string' ? v : JSON.stringify(v)}`)
        .join(', ')
    : 'no generation.json';
  const figures = [
    [`CLIP R-precision (R = 1), own caption first among ${r.pool}${r.pool < r.poolRequested ? ` (all ${r.captions} distinct captions; ${r.poolRequested} asked)` : ''}`, `${pct(r.top1)}${pm(r.top1StdErr, pct)}`, `chance ${pct(r.chance)}`],
    ...(r.top5 !== null ? [[`own caption among the first 5 of ${r.pool}`, pct(r.top5), `chance ${pct(Math.min(1, 5 / r.pool))}`]] : []),
    ['mean CLIP score, 100 max(cos, 0)', `${fmt(c.mean)}${pm(c.stdErr, fmt)}`, c.std !== null ? `std ${fmt(c.std)}` : ''],
    [`FID at blur radius ${fmt(first.radius)}`, fmt(first.fid), first.reference !== null ? `reference ${fmt(first.reference)}, ratio ${fmt(first.ratio!)}` : ''],
  ]
    .map(([what, value, note]) => `<tr><th>${escapeHtml(what)}</th><td>${value}</td><td>${escapeHtml(note)}</td></tr>`)
    .join('\n');
  const series: ChartSeries[] = [{ label: 'samples vs real', points: f.points.map((p) => ({ radius: p.radius, sigma: p.sigma, value: p.fid })) }];
  if (f.reference) series.push({ label: 'reference vs real', points: f.points.map((p) => ({ radius: p.radius, sigma: p.sigma, value: p.reference! })) });
  const curve = f.points
    .map((p) => `<tr><td>${fmt(p.radius)}</td><td>${fmt(p.sigma)}</td><td>${fmt(p.fid)}</td>${f.reference ? `<td>${fmt(p.reference!)}</td><td>${fmt(p.ratio!)}</td>` : ''}</tr>`)
    .join('\n');
  const set = (label: string, s: { path: string; images: number; skipped: { total: number } } | null) =>
    s ? `<li>${label}: <code>${escapeHtml(s.path)}</code>, ${s.images} images${s.skipped.total ? `, ${s.skipped.total} skipped` : ''}</li>` : '';
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>dalle evaluate text-to-image</title>
<style>body{font-family:system-ui,sans-serif;margin:2em;max-width:820px}table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:4px 10px}td{text-align:right}th{text-align:left;font-weight:normal}code{font-size:90%}</style>
</head><body>
<h1>${escapeHtml(report.title)}</h1>
<ul>
<li>samples: <code>${escapeHtml(report.samples.path)}</code>, ${report.samples.images} images of ${report.samples.captions} distinct captions${report.samples.keptOnly ? ' (the images a rerank kept)' : ''}; ${escapeHtml(genLine)}</li>
<li>CLIP: <code>${escapeHtml(report.clip.name)}</code> (${report.clip.imageSize} px)</li>
<li>distractors: drawn with seed ${r.seed}, without replacement from the other distinct captions</li>
<li>measured ${escapeHtml(report.createdAt)}</li>
</ul>
<table><tbody>
${figures}
</tbody></table>
<h2>FID by blur radius</h2>
<ul>
<li>features: <code>${escapeHtml(f.extractor.name)}</code>, output <code>${escapeHtml(f.extractor.output)}</code> (${f.extractor.inputSize} px input, ${f.extractor.dim} values per image)</li>
${set('samples', f.samples)}
${set('real', f.real)}
${set('reference', f.reference)}
<li>blur: ${escapeHtml(f.blur.sigma)}</li>
</ul>
${svgChartSeries(series, 'FID')}
<table><thead><tr><th>blur radius</th><th>sigma</th><th>FID, samples vs real</th>${f.reference ? '<th>FID, reference vs real</th><th>ratio</th>' : ''}</tr></thead>
<tbody>
${curve}
</tbody></table>
</body></html>
`;
}

/** Writes REPORT.json and REPORT.html atomically, creating their folder. Returns both paths. */
export function writeTextToImageReport(out: string, report: TextToImageReport): { json: string; html: string } {
  const { json, html } = reportFiles(out);
  makeOutputFolder(path.dirname(path.resolve(json)));
  writeFileAtomicSync(json, `${JSON.stringify(report, null, 2)}\n`);
  writeFileAtomicSync(html, renderTextToImageHtml(report));
  return { json, html };
}
