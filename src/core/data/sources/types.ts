/**
 * What every data source produces: an indexed list of records (so the loader can shuffle by index) and a report of
 * what it left out while indexing. Sources never decode images; the loader does, and counts decode failures too.
 */
import { SkipReport } from '../skips';

export type SourceKind = 'folder' | 'jsonl' | 'csv' | 'tar';

export interface DataRecord {
  /** Names the record in reports: a path relative to the data set, `manifest.jsonl:12`, `shard-000.tar:sample42`. */
  readonly id: string;
  /** Every caption of the image (one is drawn per epoch); empty when the data set has none for it. */
  readonly captions: readonly string[];
  /** The image's bytes. Rejects with a SkipError ('missing-file', 'unreadable', 'truncated'). */
  load(): Promise<Buffer>;
  /**
   * Set when the image is a whole file: its path. The loader then hands the path to sharp, which reads and decodes
   * in one worker-thread task (see image.ts). Absent for tar entries, which need `load()`.
   */
  readonly file?: string;
}

export interface DataSource {
  readonly kind: SourceKind;
  /** The folder, manifest or shard(s) as given. */
  readonly path: string;
  /** In a fixed order (sorted paths, manifest order, shard then entry order): the loader's shuffles index into it. */
  readonly records: readonly DataRecord[];
  /** Entries left out while indexing (non-images, bad manifest lines, missing files, truncated shards). */
  readonly skipped: SkipReport;
}

export interface SourceOptions {
  /** Leave out records without a caption ('no-caption'); the prior needs captions, the dVAE does not. */
  readonly requireCaptions?: boolean;
}
