/**
 * A folder of images with captions beside them: `cat.png` + `cat.txt` (one caption per line; several lines are
 * several captions, one drawn per epoch). Sub-folders are walked; names are sorted so the record order, and so every
 * shuffle, is the same on every machine. Dot-files are passed over; files that are neither images, captions nor
 * data-set metadata (.json, .jsonl, .csv, .md) are reported as 'not-an-image'.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { mapWithConcurrency } from '../concurrency';
import { SkipReport } from '../skips';
import { SkipError } from '../errors';
import { TextFileError } from '../../io/errors';
import { readTextFile, TEXT_LIMITS } from '../../io/text-file';
import { fileRecord, fileSkipError, IMAGE_EXTENSIONS, METADATA_EXTENSIONS, parseCaptionText } from './files';
import { DataRecord, DataSource, SourceOptions } from './types';

/** Caption files read at once: enough to hide file-system latency, few enough to leave the thread pool to others. */
const CAPTION_READS_IN_FLIGHT = 16;

export async function openFolderSource(root: string, options: SourceOptions = {}): Promise<DataSource> {
  const skipped = new SkipReport();
  const images: string[] = [];
  const captionFiles = new Set<string>();
  for (const relative of listFiles(root)) {
    const extension = path.extname(relative).toLowerCase();
    if (IMAGE_EXTENSIONS.has(extension)) images.push(relative);
    else if (extension === '.txt') captionFiles.add(relative);
    else if (!METADATA_EXTENSIONS.has(extension)) {
      skipped.add('not-an-image', relative, `extension ${extension === '' ? '(none)' : extension} is not an image`);
    }
  }

  const captionFileOf = (image: string): string => image.slice(0, image.length - path.extname(image).length) + '.txt';
  const usedCaptionFiles = new Set(images.map(captionFileOf));
  for (const orphan of captionFiles) {
    if (!usedCaptionFiles.has(orphan)) skipped.add('no-image', orphan, 'a caption file without an image beside it');
  }

  const captions = await mapWithConcurrency(images, CAPTION_READS_IN_FLIGHT, async (image) => {
    const captionFile = captionFileOf(image);
    if (!captionFiles.has(captionFile)) return [];
    try {
      return parseCaptionText(await readTextFile(path.join(root, captionFile), TEXT_LIMITS.imageCaptions));
    } catch (error) {
      // text that is not a caption file (too large, not UTF-8) stops the command: the fix is the file, not a skip
      if (error instanceof TextFileError) throw error;
      return fileSkipError(error);
    }
  });

  const records: DataRecord[] = [];
  images.forEach((image, i) => {
    const imageCaptions = captions[i];
    if (imageCaptions instanceof SkipError) {
      skipped.add(imageCaptions.reason, image, `its caption file: ${imageCaptions.detail}`);
      return;
    }
    if (options.requireCaptions === true && imageCaptions.length === 0) {
      skipped.add('no-caption', image, `no caption in ${captionFileOf(image)}`);
      return;
    }
    records.push(fileRecord(image, path.join(root, image), imageCaptions));
  });
  return { kind: 'folder', path: root, records, skipped };
}

/** Every regular file under `root` as a '/'-separated relative path, sorted by code point, dot-entries left out. */
function listFiles(root: string): string[] {
  const files: string[] = [];
  const walk = (relative: string): void => {
    const entries = fs.readdirSync(path.join(root, relative), { withFileTypes: true });
    entries.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
    for (const entry of entries) {
      if (entry.name.startsWith('.')) continue;
      const child = relative === '' ? entry.name : `${relative}/${entry.name}`;
      if (entry.isDirectory()) walk(child);
      else if (entry.isFile() || (entry.isSymbolicLink() && isFileLink(path.join(root, child)))) files.push(child);
    }
  };
  walk('');
  return files;
}

/** Links to files are followed (data sets are often assembled from links); links to folders are not (no cycles). */
function isFileLink(file: string): boolean {
  return fs.statSync(file, { throwIfNoEntry: false })?.isFile() ?? false;
}
