/**
 * The rule for folders of outputs: a command writes into a folder only if it is missing, empty, or ours, that is,
 * it holds the mark the command leaves there before its first output (`dalle generate`: generation.json; `dalle
 * decode`: decode.json; `dalle export`: its dvae.json / prior.json / config.json of a dalle format). Anything else is
 * refused before any work, naming the folder and the files in it, so a gallery, PNGs or a results.jsonl that another
 * program (or a person) put there are never overwritten or appended to.
 *
 * Hidden entries (names starting with '.') do not count: ours are the temporaries of atomic writes, run locks and the
 * write probe, and a .DS_Store or .gitkeep holds nothing an output could overwrite.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { PreflightOptions, preflightOutputFolder } from './preflight';
import { OutputPathError, writeFailure } from './write-errors';

export interface OutputFolderRule {
  /** The command that writes the folder, for messages: 'dalle decode'. */
  readonly command: string;
  /** Entries whose presence makes the folder ours. */
  readonly marks: readonly string[];
  /** A closer look at a mark that is present (its contents say it is ours); default: present is enough. */
  readonly isMark?: (file: string) => boolean;
  /** What to do about a foreign folder; default: choose another --out. */
  readonly hint?: string;
}

/** Entries shown in a refusal before "and N more". */
const SHOWN = 5;

/** The visible entries of `dir`, sorted; [] when it does not exist. */
function visibleEntries(dir: string): string[] {
  try {
    return fs.readdirSync(dir).filter((name) => !name.startsWith('.')).sort();
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') return [];
    throw writeFailure(error, dir);
  }
}

function listed(names: readonly string[]): string {
  return names.slice(0, SHOWN).join(', ') + (names.length > SHOWN ? ` and ${names.length - SHOWN} more` : '');
}

/**
 * Checks that `rule.command` may write into `dir` (see the module comment) and that it can be written
 * (preflightOutputFolder, with `options`). Returns 'new' for a missing or empty folder and 'ours' for one an earlier
 * run of the command marked; a foreign folder is an OutputPathError (exit 4). Creates nothing.
 */
export function claimOutputFolder(dir: string, rule: OutputFolderRule, options: PreflightOptions = {}): 'new' | 'ours' {
  const flag = options.flag ?? '--out';
  preflightOutputFolder(dir, options);
  const entries = visibleEntries(dir);
  if (entries.length === 0) return 'new';
  const isMark = rule.isMark ?? (() => true);
  if (rule.marks.some((mark) => entries.includes(mark) && isMark(path.join(dir, mark)))) return 'ours';
  throw new OutputPathError(
    dir,
    `${flag} ${dir} is not empty and was not written by ${rule.command} (it has no ${rule.marks.join(' or ')}): it holds ${listed(entries)}`,
    rule.hint ?? `choose another ${flag} (a new or empty folder), or move those files out of ${dir}`,
  );
}

/**
 * For a folder that holds the user's own inputs (`dalle rerank --images DIR`), where the command writes only the
 * entries `writes`: they must be absent, unless `mark` is there (an earlier run wrote them). Otherwise an
 * OutputPathError naming them (exit 4), before any work.
 */
export function checkOutputEntries(dir: string, rule: { readonly command: string; readonly flag: string; readonly mark: string; readonly writes: readonly string[] }): void {
  const entries = visibleEntries(dir);
  if (entries.includes(rule.mark)) return;
  const inTheWay = rule.writes.filter((name) => entries.includes(name));
  if (inTheWay.length === 0) return;
  throw new OutputPathError(
    dir,
    `${rule.command} writes ${rule.writes.join(', ')} into ${rule.flag} ${dir}, which already holds ${listed(inTheWay)} not written by it (there is no ${rule.mark})`,
    `move ${inTheWay.length === 1 ? 'it' : 'them'} out of ${dir} (or copy the images into a folder of their own) and run again`,
  );
}
