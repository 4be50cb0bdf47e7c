/**
 * Data: image decoding (sharp), data sources (folders, JSONL / CSV manifests, webdataset tar shards), the seeded,
 * prefetching, resumable loader, `dataset inspect`, and the emoji data set (`dataset emoji`).
 */
export { mapWithConcurrency } from './concurrency';
export { DataError, SkipError, SkipReason } from './errors';
export {
  classifyDecodeFailure,
  decodeImage,
  DecodeOptions,
  DEFAULT_MAX_INPUT_PIXELS,
  loadImageChw,
  rgbToChw,
} from './image';
export { inspectDataset, InspectOptions, InspectReport } from './inspect';
export { Batch, DataLoader, LoaderOptions, LoaderReport, LoaderState } from './loader';
export { captionDraws, DATA_STREAM_ID, dataRandom, epochOrder, pickCaption } from './order';
export { SkipReport, SkipSummary, SkippedExample } from './skips';
export { CsvRow, openCsvSource, parseCsvRows } from './sources/csv';
export { IMAGE_EXTENSIONS, parseCaptionText } from './sources/files';
export { openFolderSource } from './sources/folder';
export { openJsonlSource } from './sources/jsonl';
export { detectSourceKind, openDataSource } from './sources/open';
export { openTarSource, splitMemberName } from './sources/tar';
export { DataRecord, DataSource, SourceKind, SourceOptions } from './sources/types';
export { buildEmojiDataset, EmojiDatasetOptions, EmojiDatasetResult } from './emoji/build';
export { EMOJI_SETS, EmojiSet, EmojiSetSpec, loadEmojiSet } from './emoji/sets';
export { emojiCaption, iconSvg, renderIconPng } from './emoji/render';
export { EmojiPair, SPLIT_NAMES, SPLIT_RULE, splitEmojiPairs, SplitName } from './emoji/split';
