/** Caption files for tokenizer training: UTF-8 text, one caption a line. */
import { TextFileError } from '../io/errors';
import { readTextFileSync, TEXT_LIMITS } from '../io/text-file';
import { TokenizerError } from './errors';

/** The captions of a text file: one a line (\n or \r\n), blank lines skipped. */
export function readCaptionLines(file: string): string[] {
  let text: string;
  try {
    text = readTextFileSync(file, TEXT_LIMITS.captionList);
  } catch (err) {
    if (err instanceof TextFileError) throw err;
    throw new TokenizerError(`cannot read caption file ${JSON.stringify(file)}: ${(err as Error).message}`,
      'Pass a UTF-8 text file with one caption a line');
  }
  const captions = text.split(/\r?\n/).filter((line) => line.trim() !== '');
  if (captions.length === 0) {
    throw new TokenizerError(`caption file ${JSON.stringify(file)} has no captions`,
      'Pass a UTF-8 text file with one caption a line');
  }
  return captions;
}
