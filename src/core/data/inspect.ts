/**
 * `dalle dataset inspect PATH`: what a data set holds and what a loader would skip, cheaply: the index (counts,
 * captions, index-time skips) plus a decode of the first few records, which finds corrupt and truncated images
 * without decoding everything.
 */
import { EventSink, silentSink } from '../events';
import { mapWithConcurrency } from './concurrency';
import { DataError, SkipError } from './errors';
import { decodeImage, DEFAULT_MAX_INPUT_PIXELS } from './image';
import { SkipReport, SkipSummary } from './skips';
import { openDataSource } from './sources/open';
import { SourceKind } from './sources/types';

export interface InspectOptions {
  /** Records decoded (in source order) to look for bad images; 0 = none. */
  readonly decode: number;
  /** Side the decode check resizes to (small: the check is about readability, not looks). */
  readonly resolution?: number;
  readonly maxInputPixels?: number;
  /** Captions to show. */
  readonly examples?: number;
  readonly events?: EventSink;
}

export interface InspectReport {
  readonly path: string;
  readonly kind: SourceKind;
  /** Usable records after the index-time skips. */
  readonly records: number;
  readonly withCaptions: number;
  readonly captions: number;
  /** Index-time skips plus decode failures among the records checked. */
  readonly skipped: SkipSummary;
  readonly decodeCheck: { readonly checked: number; readonly failed: number };
  /** Captions longer than SHOWN_CAPTION_CHARS are cut, with their full length (see shownCaption). */
  readonly examples: readonly { readonly id: string; readonly captions: readonly string[] }[];
}

const DECODES_IN_FLIGHT = 2;

/** Characters of a caption a report shows: enough to recognise it, short enough for one terminal line or two. */
export const SHOWN_CAPTION_CHARS = 200;

/** `text`, or its first SHOWN_CAPTION_CHARS characters and its full length when it is longer. */
export function shownCaption(text: string): string {
  if (text.length <= SHOWN_CAPTION_CHARS) return text;
  // never end on the first half of a surrogate pair (a lone surrogate is not valid UTF-8 when printed)
  const end = /[\uD800-\uDBFF]/.test(text[SHOWN_CAPTION_CHARS - 1]) ? SHOWN_CAPTION_CHARS - 1 : SHOWN_CAPTION_CHARS;
  return `${text.slice(0, end)}... (${text.length} characters in all)`;
}

export async function inspectDataset(target: string, options: InspectOptions): Promise<InspectReport> {
  const events = options.events ?? silentSink;
  events.emit({ type: 'stage', name: 'indexing', detail: target });
  const source = await openDataSource(target);
  const skipped = new SkipReport();
  skipped.merge(source.skipped);

  const toCheck = source.records.slice(0, Math.max(0, options.decode));
  if (toCheck.length > 0) {
    events.emit({ type: 'stage', name: 'decoding', detail: `the first ${toCheck.length} records` });
  }
  const decodeOptions = {
    resolution: options.resolution ?? 32,
    maxInputPixels: options.maxInputPixels ?? DEFAULT_MAX_INPUT_PIXELS,
  };
  let done = 0;
  let failed = 0;
  await mapWithConcurrency(toCheck, DECODES_IN_FLIGHT, async (record) => {
    try {
      await (record.file !== undefined
        ? decodeImage(record.file, decodeOptions)
        : decodeImage(await record.load(), decodeOptions));
    } catch (error) {
      if (!(error instanceof SkipError)) throw error;
      failed++;
      skipped.add(error.reason, record.id, error.detail);
    }
    events.emit({ type: 'progress', task: 'decode', step: ++done, total: toCheck.length, unit: 'image' });
  });
  if (toCheck.length > 0) events.emit({ type: 'done', task: 'decode' });

  const withCaptions = source.records.filter((record) => record.captions.length > 0);
  return {
    path: target,
    kind: source.kind,
    records: source.records.length,
    withCaptions: withCaptions.length,
    captions: source.records.reduce((sum, record) => sum + record.captions.length, 0),
    skipped: skipped.toJSON(),
    decodeCheck: { checked: toCheck.length, failed },
    examples: withCaptions.slice(0, options.examples ?? 5).map(({ id, captions }) => ({ id, captions: captions.map(shownCaption) })),
  };
}

/**
 * Nothing in the data set can be used: it has no records, or every record decoded failed. It carries the report, so
 * `dalle dataset inspect --json` still shows what was skipped and why; exit code 4 (a DataError).
 */
export class UnusableDatasetError extends DataError {
  constructor(readonly report: InspectReport) {
    super(unusableProblem(report) ?? `${report.path} is usable`, 'the skipped entries say why each record was left out: fix or replace those files, or point at another data set');
  }
}

/** Throws UnusableDatasetError when nothing in the report can be trained on. */
export function checkDatasetUsable(report: InspectReport): void {
  if (unusableProblem(report) !== undefined) throw new UnusableDatasetError(report);
}

function unusableProblem({ path, records, skipped, decodeCheck: { checked, failed } }: InspectReport): string | undefined {
  const reasons = Object.entries(skipped.byReason).map(([reason, count]) => `${reason} ${count ?? 0}`).join(', ');
  const why = reasons === '' ? '' : ` (skipped: ${reasons})`;
  if (records === 0) return `${path}: nothing in it can be used: no usable images${why}`;
  if (checked === 0 || failed < checked) return undefined;
  const which = checked === records ? `none of its ${records} images` : `none of the first ${checked} of its ${records} records`;
  return `${path}: nothing decodable: ${which} could be decoded as an image${why}`;
}
