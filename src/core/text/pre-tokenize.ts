/**
 * Hugging Face's Lowercase normalizer and ByteLevel pre-tokenizer in plain JS, exact by construction: the library's
 * N-API calls make a whole encode ~3.6x slower (13.8 us against 3.8 us of CPU a caption on 14k emoji captions), so the
 * common files run here and only the per-character facts come from the library, each asked once and cached:
 *   - lower-casing: the library maps each character on its own (Rust's char::to_lowercase; a final capital sigma
 *     becomes σ, where String.prototype.toLowerCase gives ς);
 *   - the character classes of GPT-2's split regex, which the library evaluates with Oniguruma's Unicode tables:
 *     they differ from V8's for characters added in recent Unicode versions (U+10940.., U+A7CE..) and for U+0085 and
 *     U+FEFF (whitespace or not), so JS's \p{L}, \p{N} and \s cannot be used for non-ASCII text.
 *
 * GPT-2's regex  's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+  is scanned by hand below,
 * alternative by alternative, over those classes.
 */
import { byteLevelPreTokenizer, lowercase as hfLowercase, Normalizer, PreTokenizer } from 'tokenizers';

/** Letter, number, whitespace, other (the regex's classes). */
const enum CharClass {
  Letter = 0,
  Number = 1,
  Space = 2,
  Other = 3,
}

const classCache = new Map<number, CharClass>();
const lowerCache = new Map<number, string>();
let probe: PreTokenizer | undefined;
let lowerer: Normalizer | undefined;

function asciiClass(code: number): CharClass {
  if ((code >= 0x41 && code <= 0x5a) || (code >= 0x61 && code <= 0x7a)) return CharClass.Letter;
  if (code >= 0x30 && code <= 0x39) return CharClass.Number;
  if (code === 0x20 || (code >= 0x09 && code <= 0x0d)) return CharClass.Space;
  return CharClass.Other;
}

/**
 * The library's class of a non-ASCII character c, from how it splits 'a' c c '1':
 * letter ['acc', '1'], number ['a', 'cc1'], whitespace ['a', 'c', 'c', '1'], other ['a', 'cc', '1'].
 */
function probeClass(char: string): CharClass {
  probe ??= byteLevelPreTokenizer(false, true);
  const pieces = probe.preTokenizeString(`a${char}${char}1`).map(([piece]) => piece.length);
  const shape = pieces.join(',');
  const n = Buffer.byteLength(char, 'utf8'); // byte-level pieces have one character per byte
  if (shape === `${1 + 2 * n},1`) return CharClass.Letter;
  if (shape === `1,${2 * n + 1}`) return CharClass.Number;
  if (shape === `1,${n},${n},1`) return CharClass.Space;
  if (shape === `1,${2 * n},1`) return CharClass.Other;
  throw new Error(`internal: unexpected split of U+${char.codePointAt(0)!.toString(16)}: ${shape}`);
}

function classOf(code: number, char: string): CharClass {
  if (code < 0x80) return asciiClass(code);
  let found = classCache.get(code);
  if (found === undefined) {
    found = probeClass(char);
    classCache.set(code, found);
  }
  return found;
}

/** Text with lone surrogates replaced by U+FFFD, as the library receives it through N-API (UTF-8). */
export function wellFormed(text: string): string {
  return text.replace(/[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/g, '\ufffd');
}

const ASCII = /^[\x00-\x7f]*$/;

/** The library's Lowercase normalizer: each character lower-cased on its own. */
export function lowercaseByChar(text: string): string {
  if (ASCII.test(text)) return text.toLowerCase();
  let out = '';
  for (const char of text) {
    const code = char.codePointAt(0)!;
    if (code < 0x80) {
      out += char.toLowerCase();
      continue;
    }
    let lower = lowerCache.get(code);
    if (lower === undefined) {
      lowerer ??= hfLowercase();
      lower = lowerer.normalizeString(char);
      lowerCache.set(code, lower);
    }
    out += lower;
  }
  return out;
}

const CONTRACTIONS = ['re', 've', 'll', 's', 't', 'm', 'd'];

/** GPT-2's split of (well-formed) text into pieces, exactly as the library's ByteLevel pre-tokenizer with use_regex. */
export function gpt2Split(text: string): string[] {
  // one entry per code point: its class and where it starts in `text`
  const starts: number[] = [];
  const classes: CharClass[] = [];
  for (let i = 0; i < text.length; ) {
    const code = text.codePointAt(i)!;
    const width = code > 0xffff ? 2 : 1;
    starts.push(i);
    classes.push(classOf(code, text.slice(i, i + width)));
    i += width;
  }
  starts.push(text.length);
  const n = classes.length;
  const pieces: string[] = [];
  const run = (from: number, cls: CharClass): number => {
    let end = from;
    while (end < n && classes[end] === cls) end++;
    return end;
  };
  let i = 0;
  while (i < n) {
    let end = -1;
    // 's|'t|'re|'ve|'m|'ll|'d  (code points equal UTF-16 units here: all ASCII)
    if (text[starts[i]] === "'") {
      for (const tail of CONTRACTIONS) {
        if (text.startsWith(tail, starts[i] + 1)) {
          end = i + 1 + tail.length;
          break;
        }
      }
    }
    //  ?\p{L}+ |  ?\p{N}+ |  ?[^\s\p{L}\p{N}]+  (the optional prefix is U+0020 only)
    if (end < 0) {
      for (const cls of [CharClass.Letter, CharClass.Number, CharClass.Other]) {
        if (classes[i] === cls) {
          end = run(i, cls);
          break;
        }
        if (text[starts[i]] === ' ' && i + 1 < n && classes[i + 1] === cls) {
          end = run(i + 1, cls);
          break;
        }
      }
    }
    // \s+(?!\S) | \s+ : a whitespace run leaves its last character to the word after it, unless it is one long
    if (end < 0) {
      const wsEnd = run(i, CharClass.Space);
      end = wsEnd === n || wsEnd - i < 2 ? wsEnd : wsEnd - 1;
    }
    pieces.push(text.slice(starts[i], starts[end]));
    i = end;
  }
  return pieces;
}
