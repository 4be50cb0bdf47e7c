/**
 * Which folders `dalle export --out DIR` may write (io/output-folder.ts): new or empty ones, and its own, those holding
 * a description it writes whose format is dalle's: dvae.json (dalle-dvae-onnx-1), prior.json (dalle-prior-onnx-1), or
 * a CLIP config.json with a `dalle` section (dalle-clip-onnx-1). A Hugging Face export, or any other folder with
 * files in it, is refused rather than overwritten.
 */
import * as path from 'node:path';
import type { OutputFolderRule } from '../io/output-folder';
import { TEXT_LIMITS, readTextFileSync } from '../io/text-file';
import { CLIP_CONFIG_FILE, CLIP_EXPORT_FORMAT } from './clip-export';
import { DVAE_EXPORT_FORMAT, DVAE_EXPORT_INFO_FILE } from './dvae-export';
import { PRIOR_EXPORT_FORMAT, PRIOR_EXPORT_INFO_FILE } from './prior-export';

/** The format a description names, where it says. */
const FORMAT_OF: Readonly<Record<string, (json: Record<string, unknown>) => unknown>> = {
  [DVAE_EXPORT_INFO_FILE]: (json) => json.format === DVAE_EXPORT_FORMAT,
  [PRIOR_EXPORT_INFO_FILE]: (json) => json.format === PRIOR_EXPORT_FORMAT,
  [CLIP_CONFIG_FILE]: (json) => (json.dalle as Record<string, unknown> | undefined)?.format === CLIP_EXPORT_FORMAT,
};

/** Whether `file` is one of the descriptions `dalle export` writes (an unreadable or foreign one is not). */
function isExportDescription(file: string): boolean {
  const ours = FORMAT_OF[path.basename(file)];
  if (ours === undefined) return false;
  try {
    const json = JSON.parse(readTextFileSync(file, TEXT_LIMITS.runMetadata)) as unknown;
    return typeof json === 'object' && json !== null && ours(json as Record<string, unknown>) === true;
  } catch {
    return false;
  }
}

export const EXPORT_OUTPUT_RULE: OutputFolderRule = {
  command: 'dalle export',
  marks: Object.keys(FORMAT_OF),
  isMark: isExportDescription,
};
