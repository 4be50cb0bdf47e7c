/**
 * The output folder of `dalle decode`:
 *
 *   DIR/decode.json    {format, tokens, dvae, images, grid}: what the folder holds; written before the first PNG, it
 *                      marks the folder as decode's (io/output-folder.ts), so a rerun may write there again
 *   DIR/000000.png     grid 0 of the token file, 000001.png grid 1, ...
 *   DIR/grid.png       with --grid, a contact sheet
 *
 * A folder with other files and no decode.json is refused. A rerun into decode's own folder first removes the PNGs an
 * earlier decode wrote there (by their names), so the folder never mixes two token files' images.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { writeFileAtomicSync } from '../io/atomic';
import type { OutputFolderRule } from '../io/output-folder';
import { makeOutputFolder } from '../io/preflight';
import { guardWriteSync } from '../io/write-errors';

export const DECODE_MANIFEST_FILE = 'decode.json';
export const DECODE_GRID_FILE = 'grid.png';
const DECODE_FORMAT = 'dalle-decode-1';

/** A folder is decode's own when it holds decode.json. */
export const DECODE_OUTPUT_RULE: OutputFolderRule = { command: 'dalle decode', marks: [DECODE_MANIFEST_FILE] };

/** The PNG of grid `index`: 000012.png. */
export function decodedImageName(index: number): string {
  return `${String(index).padStart(6, '0')}.png`;
}

const DECODED_IMAGE = /^\d{6,}\.png$/;

export interface DecodeManifest {
  /** The token file decoded, and the dVAE checkpoint that decoded it. */
  readonly tokens: string;
  readonly dvae: string;
  readonly images: number;
  readonly grid: boolean;
}

/**
 * Makes `dir` ready for a decode (after claimOutputFolder(dir, DECODE_OUTPUT_RULE) said it is new or ours): creates
 * it, removes an earlier decode's PNGs and contact sheet, and writes decode.json.
 */
export function startDecodeFolder(dir: string, manifest: DecodeManifest): void {
  makeOutputFolder(dir);
  for (const name of fs.readdirSync(dir)) {
    if (DECODED_IMAGE.test(name) || name === DECODE_GRID_FILE) guardWriteSync(path.join(dir, name), () => fs.rmSync(path.join(dir, name), { force: true }));
  }
  writeFileAtomicSync(path.join(dir, DECODE_MANIFEST_FILE), `${JSON.stringify({ format: DECODE_FORMAT, ...manifest }, null, 2)}\n`);
}
