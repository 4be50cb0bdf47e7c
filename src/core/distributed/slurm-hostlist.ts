/**
 * Slurm hostlist expressions, as in SLURM_JOB_NODELIST: `node[01-04,07],gpu-a[1-2]`.
 *
 * Grammar (what Slurm writes; anything else is refused, naming the column):
 *   list    := host (',' host)*               commas between brackets separate hosts
 *   host    := (name | '[' ranges ']')+       several bracket groups expand as a product, the leftmost slowest:
 *                                             `r[1-2]n[1-2]` = r1n1, r1n2, r2n1, r2n2; text after a group is kept
 *   ranges  := range (',' range)*             commas inside brackets separate ranges
 *   range   := digits | digits '-' digits     ascending; each number is zero-padded to the width of the range's
 *                                             lower bound, as Slurm does: `[08-10]` = 08, 09, 10; `[8-10]` = 8, 9, 10
 *   name    := [A-Za-z0-9._-]+
 * Bounds: the text is at most MAX_HOSTLIST_CHARS characters, a bound at most 9 digits, and an expansion at most
 * `limit` hosts (counted before anything is expanded); `firstHost` expands nothing.
 */

export const MAX_HOSTLIST_CHARS = 65_536;
/** Hosts one expansion may produce (the largest clusters have tens of thousands of nodes). */
export const MAX_HOSTLIST_HOSTS = 1_000_000;
const MAX_BOUND_DIGITS = 9;

/** A hostlist that cannot be read; the message names the column. */
export class HostlistError extends Error {
  override readonly name = 'HostlistError';
}

interface NumberRange {
  readonly low: number;
  readonly high: number;
  /** Digits of every number: the lower bound's as written (leading zeros kept). */
  readonly width: number;
}

/** A literal part of a host name, or a bracket group (one of its numbers at that place). */
type HostPart = string | readonly NumberRange[];

/** One host pattern: its parts in order. */
type HostPattern = readonly HostPart[];

const NAME_CHAR = /[A-Za-z0-9._-]/;

/** The host patterns of `text` (see the module comment), checked. */
function parseHostlist(text: string): HostPattern[] {
  if (text.length > MAX_HOSTLIST_CHARS) throw new HostlistError(`hostlist is ${text.length} characters long, more than ${MAX_HOSTLIST_CHARS}`);
  if (text === '') throw new HostlistError('hostlist is empty');
  const patterns: HostPattern[] = [];
  let parts: HostPart[] = [];
  let name = '';
  let at = 0;
  const endHost = (): void => {
    if (name !== '') parts.push(name);
    if (parts.length === 0) throw new HostlistError(`empty host name at column ${at + 1} of ${JSON.stringify(text)}`);
    patterns.push(parts);
    parts = [];
    name = '';
  };
  while (at < text.length) {
    const char = text[at];
    if (char === ',') {
      endHost();
      at++;
    } else if (char === '[') {
      if (name !== '') parts.push(name);
      name = '';
      const close = text.indexOf(']', at + 1);
      if (close === -1) throw new HostlistError(`'[' at column ${at + 1} of ${JSON.stringify(text)} is never closed`);
      parts.push(parseRanges(text, at + 1, close));
      at = close + 1;
    } else if (NAME_CHAR.test(char)) {
      name += char;
      at++;
    } else {
      throw new HostlistError(`unexpected ${JSON.stringify(char)} at column ${at + 1} of ${JSON.stringify(text)}`);
    }
  }
  endHost();
  return patterns;
}

/** The ranges between `[` (before `from`) and `]` (at `to`). */
function parseRanges(text: string, from: number, to: number): NumberRange[] {
  const body = text.slice(from, to);
  const where = `in the brackets at column ${from} of ${JSON.stringify(text)}`;
  if (body === '') throw new HostlistError(`empty brackets ${where}`);
  return body.split(',').map((item) => {
    const m = /^(\d+)(?:-(\d+))?$/.exec(item);
    if (!m) throw new HostlistError(`${JSON.stringify(item)} ${where} is not a number or a range N-M`);
    if (m[1].length > MAX_BOUND_DIGITS || (m[2] ?? '').length > MAX_BOUND_DIGITS) {
      throw new HostlistError(`${JSON.stringify(item)} ${where} has a bound of more than ${MAX_BOUND_DIGITS} digits`);
    }
    const low = Number(m[1]);
    const high = m[2] === undefined ? low : Number(m[2]);
    if (high < low) throw new HostlistError(`range ${JSON.stringify(item)} ${where} descends`);
    return { low, high, width: m[1].length };
  });
}

function formatNumber(value: number, width: number): string {
  return String(value).padStart(width, '0');
}

function groupSize(group: readonly NumberRange[]): number {
  return group.reduce((sum, range) => sum + range.high - range.low + 1, 0);
}

/** Every host of `text`, in order (duplicates kept, as Slurm writes none). Throws past `limit` hosts, before expanding. */
export function expandHostlist(text: string, limit = MAX_HOSTLIST_HOSTS): string[] {
  const patterns = parseHostlist(text);
  let total = 0;
  for (const pattern of patterns) {
    let count = 1;
    for (const part of pattern) if (typeof part !== 'string') count = Math.min(count * groupSize(part), limit + 1);
    total += count;
    if (total > limit) throw new HostlistError(`hostlist ${JSON.stringify(text.slice(0, 80))} names more than ${limit} hosts`);
  }
  const hosts: string[] = [];
  for (const pattern of patterns) expandPattern(pattern, 0, '', hosts);
  return hosts;
}

function expandPattern(pattern: HostPattern, index: number, prefix: string, into: string[]): void {
  if (index === pattern.length) {
    into.push(prefix);
    return;
  }
  const part = pattern[index];
  if (typeof part === 'string') return expandPattern(pattern, index + 1, prefix + part, into);
  for (const range of part) {
    for (let value = range.low; value <= range.high; value++) expandPattern(pattern, index + 1, prefix + formatNumber(value, range.width), into);
  }
}

/** The first host of `text` (the whole list is checked; nothing is expanded). */
export function firstHost(text: string): string {
  const [first] = parseHostlist(text);
  return first.map((part) => (typeof part === 'string' ? part : formatNumber(part[0].low, part[0].width))).join('');
}
