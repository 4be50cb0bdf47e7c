/**
 * Caption tokens: byte-level BPE (GPT-2's scheme) with the paper's lower-casing and BPE dropout (DALL-E, Ramesh et al.
 * 2021, section 2.2 and Appendix B: captions lower-cased, a 16,384-token BPE vocabulary, BPE dropout 0.1 in training).
 *
 * The file format is Hugging Face's tokenizer.json, so other tools (transformers, tokenizers in Python or Rust) read
 * our tokenizers and we read theirs. The `tokenizers` npm package (the library's Node binding) trains the merges and
 * supplies the normalizer (lower-casing) and the ByteLevel pre-tokenizer (GPT-2's regex split) of any file; the merge
 * loop itself is ours (bpe-dropout.ts) so that BPE dropout draws from our seeded Philox stream and training resumes
 * exactly. With dropout 0 our ids equal the library's (tested on many strings).
 *
 * Ids: a tokenizer we train has the 256 byte symbols as ids 0..255 (id = the byte) and the token made by merge r as
 * id 256 + r (merges that remake an existing token add none), so vocabSize = 256 + kept merges.
 *
 * Limitations with foreign files: added tokens are matched literally (their lstrip, rstrip and single_word options
 * are ignored), and post-processor tokens (e.g. a BOS token) are never added, as with add_special_tokens = false.
 */
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { Tokenizer as HfTokenizer } from 'tokenizers';
import { writeFileAtomicSync } from '../io/atomic';
import { TextFileError } from '../io/errors';
import { readTextFileSync, TEXT_LIMITS } from '../io/text-file';
import type { Philox } from '../tensor/rng';
import { BpeMerge, BpeMerger } from './bpe-dropout';
import { BYTE_TO_CHAR, byteLevelToBytes, toByteLevel } from './byte-level';
import { TokenizerError } from './errors';
import { gpt2Split, lowercaseByChar, wellFormed } from './pre-tokenize';

/** Base vocabulary of a byte-level BPE: one symbol per byte. */
export const BYTE_VOCAB = 256;
/** Distinct words whose dropout-free tokens are cached. */
const CACHE_WORDS = 100_000;
/** Hugging Face's default BPE trainer stops at this vocabulary size, and its Node binding cannot change it. */
const HF_DEFAULT_TRAINER_VOCAB = 30_000;

const BAD_FILE_HINT =
  'Pass a byte-level BPE tokenizer.json (GPT-2 style, as written by `dalle tokenizer train` or Hugging Face ' +
  'tokenizers), or train one with `dalle tokenizer train`';

export interface TrainOptions {
  /** Tokens in the vocabulary: 256 byte symbols + (vocabSize - 256) merge results (paper: 16384). */
  vocabSize: number;
  /** Lower-case captions before BPE, in training and at every encode (paper: yes). */
  lowercase: boolean;
}

export interface EncodeOptions {
  /** BPE dropout probability in [0, 1]: each possible merge is skipped with this chance at each step. Default 0. */
  dropout?: number;
  /** The random stream for dropout (needed when dropout > 0); it advances by the draws made. */
  rng?: Philox;
}

type Json = null | boolean | number | string | Json[] | { [key: string]: Json };
type JsonObject = { [key: string]: Json };

interface AddedToken {
  readonly id: number;
  readonly content: string;
  readonly normalized: boolean;
}

function isObject(value: Json | undefined): value is JsonObject {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function isId(value: Json | undefined): value is number {
  return typeof value === 'number' && Number.isSafeInteger(value) && value >= 0;
}

/** Does this pre-tokenizer (or a Sequence holding it) include ByteLevel? */
function hasByteLevel(node: Json | undefined): boolean {
  if (!isObject(node)) return false;
  if (node.type === 'ByteLevel') return true;
  return node.type === 'Sequence' && Array.isArray(node.pretokenizers) && node.pretokenizers.some(hasByteLevel);
}

/** Does this normalizer lower-case (Lowercase, a Sequence with one, or BertNormalizer with lowercase)? */
function lowercases(node: Json | undefined): boolean {
  if (!isObject(node)) return false;
  if (node.type === 'Lowercase') return true;
  if (node.type === 'BertNormalizer') return node.lowercase !== false;
  return node.type === 'Sequence' && Array.isArray(node.normalizers) && node.normalizers.some(lowercases);
}

/** Split `text` into literal added tokens (leftmost, then longest match) and the pieces between them. */
function splitOnAdded(text: string, tokens: readonly AddedToken[]): (string | AddedToken)[] {
  if (tokens.length === 0 || text.length === 0) return text.length === 0 ? [] : [text];
  const out: (string | AddedToken)[] = [];
  let start = 0;
  let i = 0;
  while (i < text.length) {
    let match: AddedToken | undefined;
    for (const token of tokens) {
      if (token.content.length > 0 && text.startsWith(token.content, i)) {
        if (match === undefined || token.content.length > match.content.length) match = token;
      }
    }
    if (match === undefined) {
      i++;
      continue;
    }
    if (i > start) out.push(text.slice(start, i));
    out.push(match);
    i += match.content.length;
    start = i;
  }
  if (start < text.length) out.push(text.slice(start));
  return out;
}

export class TextTokenizer {
  /** Ids are 0..vocabSize-1. */
  readonly vocabSize: number;
  /** Whether the file's normalizer lower-cases text before BPE. */
  readonly lowercase: boolean;
  /** Merges in rank order (for inspection; the BPE model's own list). */
  readonly mergeCount: number;

  private readonly idToToken: string[];
  private readonly tokenToId: Map<string, number>;
  private readonly merger: BpeMerger;
  private readonly rawAdded: AddedToken[];
  private readonly normalizedAdded: AddedToken[];
  private readonly unkId: number | undefined;
  private readonly fuseUnk: boolean;
  private readonly ignoreMerges: boolean;
  private readonly cache = new Map<string, number[]>();
  /** Text -> normalized text (the file's normalizer). */
  private readonly normalize: (text: string) => string;
  /** Normalized text -> words in byte-level characters (the file's pre-tokenizer). */
  private readonly preTokenize: (text: string) => string[];

  private constructor(
    /** The parsed tokenizer.json, written back unchanged by save(). */
    private readonly json: JsonObject,
    /** The library's tokenizer: its normalizer and pre-tokenizer are the file's. */
    private readonly hf: HfTokenizer,
    fields: {
      idToToken: string[];
      tokenToId: Map<string, number>;
      merges: BpeMerge[];
      added: AddedToken[];
      unkId: number | undefined;
      fuseUnk: boolean;
      ignoreMerges: boolean;
    },
  ) {
    this.idToToken = fields.idToToken;
    this.tokenToId = fields.tokenToId;
    this.vocabSize = fields.idToToken.length;
    this.merger = new BpeMerger(fields.merges, this.vocabSize);
    this.mergeCount = fields.merges.length;
    this.rawAdded = fields.added.filter((token) => !token.normalized);
    this.normalizedAdded = fields.added.filter((token) => token.normalized);
    this.unkId = fields.unkId;
    this.fuseUnk = fields.fuseUnk;
    this.ignoreMerges = fields.ignoreMerges;
    this.lowercase = lowercases(json.normalizer);
    // The common files (ours, GPT-2's) run in plain JS (pre-tokenize.ts; measured on 14k emoji captions: 3.8 us of CPU
    // a caption for the whole encode, 13.8 us through the library's N-API calls); anything else goes through the
    // library's own normalizer and pre-tokenizer. Both are tested against the library.
    this.normalize = fastNormalizer(json.normalizer) ?? libraryNormalizer(hf);
    this.preTokenize = fastPreTokenizer(json.pre_tokenizer) ?? libraryPreTokenizer(hf);
  }

  /**
   * Learn a byte-level BPE vocabulary of `vocabSize` tokens from captions (Hugging Face's trainer, in a child process):
   * the 256 bytes, then the results of the first merges it learns, in order, until there are vocabSize tokens.
   */
  static async train(captions: readonly string[], opts: TrainOptions): Promise<TextTokenizer> {
    const { vocabSize } = opts;
    if (!Number.isSafeInteger(vocabSize) || vocabSize < BYTE_VOCAB || vocabSize > HF_DEFAULT_TRAINER_VOCAB) {
      throw new TokenizerError(
        `vocabulary size must be an integer in [${BYTE_VOCAB}, ${HF_DEFAULT_TRAINER_VOCAB}], got ${vocabSize}`,
        `${BYTE_VOCAB} byte symbols come first; the library's trainer stops at ${HF_DEFAULT_TRAINER_VOCAB} ` +
          '(paper: 16384)',
      );
    }
    if (captions.length === 0) throw new TokenizerError('no captions to train on', 'Pass a non-empty caption list');
    const dir = await fs.promises.mkdtemp(path.join(os.tmpdir(), 'dalle-bpe-'));
    try {
      const captionsFile = path.join(dir, 'captions.txt');
      const outFile = path.join(dir, 'hf.json');
      // one caption a line: the trainer reads lines (a newline inside a caption only splits it in two)
      await fs.promises.writeFile(captionsFile, captions.join('\n') + '\n');
      await runTrainWorker(captionsFile, outFile, opts.lowercase);
      const trained = JSON.parse(await fs.promises.readFile(outFile, 'utf8')) as JsonObject;
      const model = trained.model as JsonObject;
      const pairs = parseMerges(model.merges, '<trainer output>');
      return TextTokenizer.fromJson(buildByteLevelJson(pairs, opts), '<trained>');
    } finally {
      await fs.promises.rm(dir, { recursive: true, force: true });
    }
  }

  /** Read a Hugging Face tokenizer.json; it must be a byte-level BPE. */
  static load(file: string): TextTokenizer {
    let text: string;
    try {
      text = readTextFileSync(file, TEXT_LIMITS.tokenizer);
    } catch (err) {
      if (err instanceof TextFileError) throw err;
      throw new TokenizerError(`cannot read it: ${(err as Error).message}`,
        'Check the path (train one with `dalle tokenizer train`)', file);
    }
    let json: Json;
    try {
      json = JSON.parse(text) as Json;
    } catch (err) {
      throw new TokenizerError(`it is not valid JSON: ${(err as Error).message}`, BAD_FILE_HINT, file);
    }
    if (!isObject(json)) throw new TokenizerError('the top level is not a JSON object', BAD_FILE_HINT, file);
    return TextTokenizer.fromJson(json, file);
  }

  /** Validate a parsed tokenizer.json and build the tokenizer (`file` names it in errors). */
  static fromJson(json: JsonObject, file: string): TextTokenizer {
    const fail = (detail: string): never => {
      throw new TokenizerError(detail, BAD_FILE_HINT, file);
    };
    const model = json.model;
    if (!isObject(model)) return fail('it has no "model" object');
    if (model.type !== undefined && model.type !== 'BPE') {
      fail(`its model is ${JSON.stringify(model.type)}, not a byte-level BPE`);
    }
    if (!hasByteLevel(json.pre_tokenizer)) {
      fail(`its pre_tokenizer (${JSON.stringify(isObject(json.pre_tokenizer) ? json.pre_tokenizer.type : null)}) ` +
        'has no ByteLevel step, so it is not a byte-level BPE');
    }
    for (const key of ['continuing_subword_prefix', 'end_of_word_suffix'] as const) {
      const value = model[key];
      if (value !== undefined && value !== null && value !== '') fail(`model.${key} is set (${JSON.stringify(value)}): not byte-level BPE`);
    }
    if (model.byte_fallback === true) fail('model.byte_fallback is true: not byte-level BPE');

    // vocabulary: token -> id, ids dense 0..n-1 together with the added tokens
    const vocab = model.vocab;
    if (!isObject(vocab)) return fail('model.vocab is not an object of token -> id');
    const byId = new Map<number, string>();
    const tokenToId = new Map<string, number>();
    for (const [token, id] of Object.entries(vocab)) {
      if (!isId(id)) fail(`model.vocab[${JSON.stringify(token)}] = ${JSON.stringify(id)} is not a non-negative integer id`);
      const id_ = id as number;
      const other = byId.get(id_);
      if (other !== undefined) fail(`id ${id_} is used by both ${JSON.stringify(other)} and ${JSON.stringify(token)}`);
      byId.set(id_, token);
      tokenToId.set(token, id_);
    }
    const added: AddedToken[] = [];
    const addedList = json.added_tokens ?? [];
    if (!Array.isArray(addedList)) return fail('added_tokens is not an array');
    addedList.forEach((entry, index) => {
      if (!isObject(entry) || !isId(entry.id) || typeof entry.content !== 'string') {
        fail(`added_tokens[${index}] needs an integer "id" and a string "content"`);
      }
      const { id, content, normalized: norm, special } = entry as JsonObject & { id: number; content: string };
      const other = byId.get(id);
      if (other !== undefined && other !== content) {
        fail(`added_tokens[${index}] (${JSON.stringify(content)}) has id ${id}, already used by ${JSON.stringify(other)}`);
      }
      const existing = tokenToId.get(content);
      if (existing !== undefined && existing !== id) {
        fail(`added_tokens[${index}] (${JSON.stringify(content)}) has id ${id} but model.vocab gives it ${existing}`);
      }
      byId.set(id, content);
      tokenToId.set(content, id);
      // the library's default: special tokens are matched in the raw text, others after normalization
      const normalized = typeof norm === 'boolean' ? norm : special !== true;
      added.push({ id, content, normalized });
    });
    const vocabSize = byId.size;
    if (vocabSize === 0) fail('model.vocab is empty');
    const idToToken: string[] = new Array<string>(vocabSize);
    for (const [id, token] of byId) {
      if (id >= vocabSize) {
        fail(`ids must be 0..${vocabSize - 1} with no gaps, but ${JSON.stringify(token)} has id ${id}`);
      }
      idToToken[id] = token;
    }

    // merges, in rank order: both parts and their concatenation must be tokens (the library requires it too)
    const pairs = parseMerges(model.merges, file);
    const merges: BpeMerge[] = pairs.map(([a, b], rank) => {
      const left = tokenToId.get(a);
      const right = tokenToId.get(b);
      const result = tokenToId.get(a + b);
      if (left === undefined || right === undefined || result === undefined) {
        const missing = left === undefined ? a : right === undefined ? b : a + b;
        return fail(`model.merges[${rank}] (${JSON.stringify(a)}, ${JSON.stringify(b)}) needs ` +
          `${JSON.stringify(missing)}, which is not in model.vocab`);
      }
      return { left, right, result };
    });

    let unkId: number | undefined;
    if (typeof model.unk_token === 'string') {
      unkId = tokenToId.get(model.unk_token);
      if (unkId === undefined) fail(`model.unk_token ${JSON.stringify(model.unk_token)} is not in model.vocab`);
    }

    let hf: HfTokenizer;
    try {
      hf = HfTokenizer.fromString(JSON.stringify(json));
    } catch (err) {
      return fail(`the tokenizers library rejects it: ${(err as Error).message}`);
    }
    if (hf.getPreTokenizer() === null) fail('it has no pre_tokenizer');
    return new TextTokenizer(json, hf, {
      idToToken,
      tokenToId,
      merges,
      added,
      unkId,
      fuseUnk: model.fuse_unk === true,
      ignoreMerges: model.ignore_merges === true,
    });
  }

  /** The tokenizer.json text (what save() writes; fromJson(JSON.parse(text)) gives this tokenizer back). */
  toJsonText(): string {
    return JSON.stringify(this.json);
  }

  /** Write the tokenizer.json atomically (a reader sees the old file or the whole new one). */
  save(file: string): void {
    writeFileAtomicSync(file, JSON.stringify(this.json, null, 2) + '\n');
  }

  /** The token string of an id (byte-level characters: 'Ġcat' is " cat"). */
  token(id: number): string {
    this.checkId(id);
    return this.idToToken[id];
  }

  /**
   * Text -> token ids: added tokens, then the file's normalizer (lower-casing), its pre-tokenizer (GPT-2's split into
   * words, as bytes), then BPE on each word, with dropout when `opts.dropout` > 0 (drawing from `opts.rng`).
   */
  encode(text: string, opts: EncodeOptions = {}): number[] {
    const dropout = opts.dropout ?? 0;
    if (!(dropout >= 0 && dropout <= 1)) throw new RangeError(`BPE dropout must be in [0, 1], got ${dropout}`);
    if (dropout > 0 && opts.rng === undefined) {
      throw new RangeError('BPE dropout needs opts.rng (a seeded Philox) so that it is reproducible');
    }
    const ids: number[] = [];
    for (const piece of splitOnAdded(wellFormed(text), this.rawAdded)) {
      if (typeof piece !== 'string') {
        ids.push(piece.id);
        continue;
      }
      const normalized = this.normalize(piece);
      for (const part of splitOnAdded(normalized, this.normalizedAdded)) {
        if (typeof part !== 'string') {
          ids.push(part.id);
          continue;
        }
        for (const word of this.preTokenize(part)) {
          for (const id of this.encodeWord(word, dropout, opts.rng)) ids.push(id);
        }
      }
    }
    return ids;
  }

  /** Token ids -> text: the tokens' byte-level characters back to bytes, then UTF-8 (bad bytes become U+FFFD). */
  decode(ids: readonly number[]): string {
    const bytes: number[] = [];
    for (const id of ids) byteLevelToBytes(this.token(id), bytes);
    return new TextDecoder('utf-8').decode(Uint8Array.from(bytes));
  }

  private checkId(id: number): void {
    if (!Number.isInteger(id) || id < 0 || id >= this.vocabSize) {
      throw new RangeError(`token id ${id} is out of range: ids are 0..${this.vocabSize - 1}`);
    }
  }

  /** One pre-tokenized word (byte-level characters) -> ids. */
  private encodeWord(word: string, dropout: number, rng: Philox | undefined): number[] {
    if (dropout === 0) {
      const cached = this.cache.get(word);
      if (cached !== undefined) return cached;
    }
    let ids: number[];
    const whole = this.ignoreMerges ? this.tokenToId.get(word) : undefined;
    if (whole !== undefined) {
      ids = [whole];
    } else {
      // symbols: one per character; a character with no token becomes unk (fused if asked) or is dropped, as in HF
      const symbols: number[] = [];
      let lastUnk = false;
      for (const char of word) {
        const id = this.tokenToId.get(char);
        if (id !== undefined) {
          symbols.push(id);
          lastUnk = false;
        } else if (this.unkId !== undefined) {
          if (!(this.fuseUnk && lastUnk)) symbols.push(this.unkId);
          lastUnk = true;
        }
      }
      ids = this.merger.merge(symbols, dropout, rng);
    }
    if (dropout === 0) {
      if (this.cache.size >= CACHE_WORDS) this.cache.clear();
      this.cache.set(word, ids);
    }
    return ids;
  }
}

function fastNormalizer(node: Json | undefined): ((text: string) => string) | undefined {
  if (node === null || node === undefined) return (text) => text;
  if (isObject(node) && node.type === 'Lowercase') return lowercaseByChar;
  return undefined;
}

function libraryNormalizer(hf: HfTokenizer): (text: string) => string {
  const normalizer = hf.getNormalizer();
  return normalizer === null ? (text) => text : (text) => normalizer.normalizeString(text);
}

/** The ByteLevel pre-tokenizer in JS (its serde defaults: add_prefix_space and use_regex true). */
function fastPreTokenizer(node: Json | undefined): ((text: string) => string[]) | undefined {
  if (!isObject(node) || node.type !== 'ByteLevel') return undefined;
  const addPrefixSpace = node.add_prefix_space !== false;
  const useRegex = node.use_regex !== false;
  return (text) => {
    if (text.length === 0) return [];
    const spaced = addPrefixSpace && !text.startsWith(' ') ? ' ' + text : text;
    const words = useRegex ? gpt2Split(spaced) : [spaced];
    return words.map(toByteLevel);
  };
}

function libraryPreTokenizer(hf: HfTokenizer): (text: string) => string[] {
  const preTokenizer = hf.getPreTokenizer()!;
  return (text) => preTokenizer.preTokenizeString(text).map(([word]) => word);
}

/** model.merges as [left, right] pairs: either "left right" strings (older files) or 2-element arrays. */
function parseMerges(merges: Json | undefined, file: string): [string, string][] {
  if (!Array.isArray(merges)) throw new TokenizerError('model.merges is not an array', BAD_FILE_HINT, file);
  return merges.map((merge, rank) => {
    if (typeof merge === 'string') {
      const parts = merge.split(' ');
      if (parts.length === 2 && parts[0] !== '' && parts[1] !== '') return [parts[0], parts[1]];
    } else if (Array.isArray(merge) && merge.length === 2 && typeof merge[0] === 'string' &&
      typeof merge[1] === 'string') {
      return [merge[0], merge[1]];
    }
    throw new TokenizerError(`model.merges[${rank}] = ${JSON.stringify(merge)} is not a pair of tokens ` +
      '("a b" or ["a", "b"])', BAD_FILE_HINT, file);
  });
}

/**
 * Our tokenizer.json: bytes as ids 0..255, then each merge's result in merge order until there are vocabSize tokens.
 * A merge whose result is already a token (two merge orders can spell one string) adds a merge but no token.
 */
function buildByteLevelJson(pairs: readonly [string, string][], opts: TrainOptions): JsonObject {
  const vocab = new Map<string, number>(BYTE_TO_CHAR.map((char, byte) => [char, byte]));
  const kept: [string, string][] = [];
  for (const [a, b] of pairs) {
    if (vocab.size >= opts.vocabSize) break;
    if (!vocab.has(a) || !vocab.has(b)) {
      throw new Error(`internal: trained merge (${a}, ${b}) uses a token not made by an earlier merge`);
    }
    kept.push([a, b]);
    if (!vocab.has(a + b)) vocab.set(a + b, vocab.size);
  }
  if (vocab.size < opts.vocabSize) {
    throw new TokenizerError(
      `the captions yield only ${vocab.size} tokens (${BYTE_VOCAB} bytes + ${vocab.size - BYTE_VOCAB} merges), ` +
        `fewer than the ${opts.vocabSize} asked for`,
      `Train on more captions, or ask for a vocabulary of at most ${vocab.size}`,
    );
  }
  const byteLevel = { type: 'ByteLevel', add_prefix_space: false, trim_offsets: true, use_regex: true };
  return {
    version: '1.0',
    truncation: null,
    padding: null,
    added_tokens: [],
    normalizer: opts.lowercase ? { type: 'Lowercase' } : null,
    pre_tokenizer: byteLevel,
    post_processor: null,
    decoder: { ...byteLevel },
    model: {
      type: 'BPE',
      dropout: null,
      unk_token: null,
      continuing_subword_prefix: null,
      end_of_word_suffix: null,
      fuse_unk: false,
      byte_fallback: false,
      ignore_merges: false,
      vocab: Object.fromEntries(vocab),
      merges: kept,
    },
  };
}

/** Run train-worker.js; its stdout (the library's progress lines) is discarded, its stderr kept for errors. */
function runTrainWorker(captionsFile: string, outFile: string, lowercase: boolean): Promise<void> {
  const worker = path.join(__dirname, 'train-worker.js');
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [worker, captionsFile, outFile, lowercase ? '1' : '0'], {
      stdio: ['ignore', 'ignore', 'pipe'],
    });
    let stderr = '';
    child.stderr.setEncoding('utf8');
    child.stderr.on('data', (chunk: string) => {
      if (stderr.length < 20_000) stderr += chunk;
    });
    child.on('error', reject);
    child.on('close', (code, signal) => {
      if (code === 0) resolve();
      else {
        reject(new TokenizerError(`BPE training failed (exit ${code ?? signal}): ${stderr.trim()}`,
          'Check that the tokenizers package is installed (npm ci) and the captions are text'));
      }
    });
  });
}
