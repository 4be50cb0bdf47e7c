/** Helpers the sources share: which files are images, how caption text splits, how a missing file is reported. */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { SkipError } from '../errors';

/** Extensions sharp decodes (lower case, with the dot). */
export const IMAGE_EXTENSIONS: ReadonlySet<string> = new Set([
  '.png',
  '.jpg',
  '.jpeg',
  '.webp',
  '.gif',
  '.tif',
  '.tiff',
  '.avif',
  '.svg',
]);

/** Files that describe a data set rather than belong to it: a folder source passes over them without a report. */
export const METADATA_EXTENSIONS: ReadonlySet<string> = new Set(['.json', '.jsonl', '.csv', '.md']);

export function isImagePath(file: string): boolean {
  return IMAGE_EXTENSIONS.has(path.extname(file).toLowerCase());
}

/** Caption text: one caption per non-empty line (a leading BOM and surrounding spaces dropped). */
export function parseCaptionText(text: string): string[] {
  return text
    .replace(/^\uFEFF/, '')
    .split(/\r?\n/)
    .map((line) => line.trim())
    .filter((line) => line !== '');
}

/** Reads a whole file for a record, turning file-system errors into SkipErrors. */
export async function readRecordFile(file: string): Promise<Buffer> {
  try {
    return await fs.promises.readFile(file);
  } catch (error) {
    throw fileSkipError(error);
  }
}

export function fileSkipError(error: unknown): SkipError {
  const code = (error as NodeJS.ErrnoException).code;
  const message = error instanceof Error ? error.message : String(error);
  return new SkipError(code === 'ENOENT' ? 'missing-file' : 'unreadable', message);
}

/** A record whose image is one file. */
export function fileRecord(id: string, file: string, captions: readonly string[]) {
  return { id, file, captions, load: () => readRecordFile(file) };
}
