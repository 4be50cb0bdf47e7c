/**
 * Opens a data set by what its path is: a `.jsonl` or `.csv` manifest, a `.tar` shard, a folder of `.tar` shards
 * (a folder holding shards and no images), or else a folder of images with `.txt` captions.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { DataError } from '../errors';
import { openCsvSource } from './csv';
import { isImagePath } from './files';
import { openFolderSource } from './folder';
import { openJsonlSource } from './jsonl';
import { openTarSource } from './tar';
import { DataSource, SourceKind, SourceOptions } from './types';

export async function openDataSource(target: string, options: SourceOptions = {}): Promise<DataSource> {
  const kind = detectSourceKind(target);
  switch (kind) {
    case 'jsonl':
      return openJsonlSource(target, options);
    case 'csv':
      return openCsvSource(target, options);
    case 'tar':
      return openTarSource(target, options);
    case 'folder':
      return openFolderSource(target, options);
  }
}

export function detectSourceKind(target: string): SourceKind {
  const stat = fs.statSync(target, { throwIfNoEntry: false });
  if (stat === undefined) {
    throw new DataError(
      `no data set at ${target}: the path does not exist`,
      'give a folder, a .jsonl or .csv manifest, or .tar shards',
    );
  }
  if (stat.isDirectory()) {
    const names = fs.readdirSync(target);
    const hasShards = names.some((name) => name.toLowerCase().endsWith('.tar'));
    return hasShards && !names.some(isImagePath) ? 'tar' : 'folder';
  }
  const extension = path.extname(target).toLowerCase();
  if (extension === '.jsonl') return 'jsonl';
  if (extension === '.csv') return 'csv';
  if (extension === '.tar') return 'tar';
  throw new DataError(
    `cannot tell what kind of data set ${target} is (extension ${extension || '(none)'})`,
    'give a folder of images, a .jsonl or .csv manifest, or a .tar shard (or a folder of .tar shards)',
  );
}
