/**
 * Counter-based random numbers: Philox4x32-10 (Salmon, Moraes, Dror, Shaw, "Parallel random numbers: as easy as
 * 1, 2, 3", SC 2011; the generator of Random123, cuRAND, PyTorch's CUDA generator and JAX).
 *
 * Philox is a keyed bijection of a 128-bit counter: every output depends only on (key, counter), so any thread can
 * compute any position of the stream without the ones before it. That is what lets native CPU and CUDA kernels
 * reproduce exactly the numbers of this reference, in any order and on any number of threads.
 *
 * THE STREAM (the contract that native kernels implement; change it only with a new name and new tests):
 *   key      = seed as a u64: key[0] = low 32 bits, key[1] = high 32 bits.
 *   word w   (w = 0, 1, 2, ..., a u64 index) = lane (w mod 4) of philox4x32_10(ctr, key),
 *            ctr = [low32(floor(w/4)), high32(floor(w/4)), 0, 0].
 *   offset   = the index of the next unused word. A request of n values starting at offset o uses words from o on,
 *            and value i of the request depends only on (seed, o, i):
 *     fillUint32        value i = word(o + i)                                                       n words
 *     fillUniform f32   value i = (word(o + i) >>> 8) * 2^-24, in [0, 1), exact in f32              n words
 *     fillUniform f64   a = word(o + 2i), b = word(o + 2i + 1):
 *                       value i = ((a >>> 5) * 2^26 + (b >>> 6)) * 2^-53, in [0, 1), exact in f64   2n words
 *     uniform()         = fillUniform f64 with n = 1                                                2 words
 *     fillNormal        pair p = floor(i/2): a = word(o + 2p), b = word(o + 2p + 1),
 *                       u1 = (a + 1) * 2^-32 in (0, 1], u2 = b * 2^-32 in [0, 1),
 *                       r = sqrt(-2 ln u1), t = 2 pi u2 (Box-Muller);
 *                       value 2p = mean + std * r cos t, value 2p+1 = mean + std * r sin t.         2 ceil(n/2) words
 *                       (an odd n drops the last sine; the same words feed f32 and f64 outputs)
 *     fillGumbel        u = (word(o + i) + 0.5) * 2^-32 in (0, 1); value i = -ln(-ln u)            n words
 *     fillRandint m     a = word(o + 2i), b = word(o + 2i + 1), x = a * 2^32 + b (a u64):
 *                       value i = floor(x * m / 2^64), in [0, m), bias below m / 2^64             2n words
 *   and the offset then advances by the words used. So 10 values then 20 values equal 30 values at once (for normals,
 *   when the first count is even), and a native kernel given (key, o) computes value i independently.
 *   Integer and uniform values are bit-exact in any implementation. Normal and Gumbel values go through log, sqrt,
 *   sin and cos, evaluated here in f64 and rounded once to the output type; other math libraries may differ by an ulp
 *   or so, and native kernels are compared to this reference with a tolerance, not bitwise.
 *
 * fork(id): an independent generator whose seed is a key derived from this one: the first two words of
 *   philox4x32_10([low32(id), high32(id), FORK_TAG, 0], key); ordinary stream counters always have word 2 = 0, so
 *   derived keys never come from the parent's own stream. fork depends on (seed, id) only, not on the offset.
 */

/** Multipliers and Weyl key increments of Philox4x32 (Random123 philox.h). */
const PHILOX_M0 = 0xd2511f53;
const PHILOX_M1 = 0xcd9e8d57;
const PHILOX_W0 = 0x9e3779b9;
const PHILOX_W1 = 0xbb67ae85;
export const PHILOX_ROUNDS = 10;
/** 'fork' in ASCII: counter word 2 of key derivations. */
const FORK_TAG = 0x666f726b;

const TWO_POW_32 = 4294967296;
const TWO_POW_NEG_24 = 1 / 16777216;
const TWO_POW_NEG_32 = 1 / TWO_POW_32;
const TWO_POW_NEG_53 = 1 / 9007199254740992;
const U64_LIMIT = 1n << 64n;

/**
 * High 32 bits of the 64-bit product of two u32 values. JS numbers hold 53 bits exactly, so the product is built
 * from 16-bit halves: a*b = hh*2^32 + (hl + lh)*2^16 + ll, every partial product below 2^32.
 */
export function mulhi32(a: number, b: number): number {
  const aLo = a & 0xffff;
  const aHi = a >>> 16;
  const bLo = b & 0xffff;
  const bHi = b >>> 16;
  const ll = aLo * bLo;
  const hl = aHi * bLo;
  const lh = aLo * bHi;
  const hh = aHi * bHi;
  const middle = (ll >>> 16) + (hl & 0xffff) + (lh & 0xffff); // < 3 * 2^16
  return (hh + (hl >>> 16) + (lh >>> 16) + (middle >>> 16)) >>> 0;
}

/** One Philox4x32 block into out[0..4): counter (c0..c3), key (k0, k1); all u32. */
function philoxBlockInto(
  c0: number,
  c1: number,
  c2: number,
  c3: number,
  k0: number,
  k1: number,
  rounds: number,
  out: Uint32Array,
): void {
  for (let round = 0; round < rounds; round++) {
    if (round > 0) {
      k0 = (k0 + PHILOX_W0) >>> 0;
      k1 = (k1 + PHILOX_W1) >>> 0;
    }
    const hi0 = mulhi32(PHILOX_M0, c0);
    const lo0 = Math.imul(PHILOX_M0, c0) >>> 0;
    const hi1 = mulhi32(PHILOX_M1, c2);
    const lo1 = Math.imul(PHILOX_M1, c2) >>> 0;
    c0 = (hi1 ^ c1 ^ k0) >>> 0;
    c1 = lo1;
    c2 = (hi0 ^ c3 ^ k1) >>> 0;
    c3 = lo0;
  }
  out[0] = c0;
  out[1] = c1;
  out[2] = c2;
  out[3] = c3;
}

/** Philox4x32-R of one counter under one key (R = 10 by default), as in Random123's known-answer tests. */
export function philox4x32(
  counter: readonly [number, number, number, number],
  key: readonly [number, number],
  rounds = PHILOX_ROUNDS,
): [number, number, number, number] {
  const out = new Uint32Array(4);
  philoxBlockInto(
    counter[0] >>> 0,
    counter[1] >>> 0,
    counter[2] >>> 0,
    counter[3] >>> 0,
    key[0] >>> 0,
    key[1] >>> 0,
    rounds,
    out,
  );
  return [out[0], out[1], out[2], out[3]];
}

function splitU64(value: bigint): [number, number] {
  return [Number(value & 0xffffffffn), Number(value >> 32n)];
}

/**
 * Words [firstWord, firstWord + count) of the stream of `key` into out[outStart...]. The reference for native
 * kernels (see the module comment).
 */
export function philoxStreamWords(
  key: readonly [number, number],
  firstWord: bigint,
  out: Uint32Array,
  outStart = 0,
  count = out.length - outStart,
): void {
  const block = new Uint32Array(4);
  let [counterLo, counterHi] = splitU64(firstWord >> 2n);
  let lane = Number(firstWord & 3n);
  let written = 0;
  while (written < count) {
    philoxBlockInto(counterLo, counterHi, 0, 0, key[0], key[1], PHILOX_ROUNDS, block);
    const take = Math.min(4 - lane, count - written);
    for (let j = 0; j < take; j++) out[outStart + written + j] = block[lane + j];
    written += take;
    lane = 0;
    counterLo = (counterLo + 1) >>> 0;
    if (counterLo === 0) counterHi = (counterHi + 1) >>> 0;
  }
}

function toU64(value: number | bigint | string, what: string): bigint {
  let result: bigint;
  if (typeof value === 'bigint') {
    result = value;
  } else if (typeof value === 'number') {
    if (!Number.isSafeInteger(value)) throw new RangeError(`${what} must be an integer, got ${value}`);
    result = BigInt(value);
  } else {
    if (!/^\d+$/.test(value)) {
      throw new RangeError(`${what} must be a decimal integer string, got ${JSON.stringify(value)}`);
    }
    result = BigInt(value);
  }
  if (result < 0n || result >= U64_LIMIT) throw new RangeError(`${what} must be in [0, 2^64), got ${result}`);
  return result;
}

/** JSON-safe generator state (u64 values as decimal strings), for checkpoints. */
export interface PhiloxState {
  seed: string;
  offset: string;
}

/** Words generated at a time by the fill methods (bounds the scratch buffer). */
const CHUNK_WORDS = 1 << 14;

export class Philox {
  private readonly seedValue: bigint;
  private readonly key: [number, number];
  private offsetValue: bigint;
  private readonly scratch = new Uint32Array(CHUNK_WORDS);

  /** `seed` and `offset` (in words; see the module comment) are u64 values. */
  constructor(seed: number | bigint, offset: number | bigint = 0n) {
    this.seedValue = toU64(seed, 'seed');
    this.key = splitU64(this.seedValue);
    this.offsetValue = toU64(offset, 'offset');
  }

  get seed(): bigint {
    return this.seedValue;
  }

  /** Index of the next unused word of the stream. */
  get offset(): bigint {
    return this.offsetValue;
  }

  state(): PhiloxState {
    return { seed: this.seedValue.toString(), offset: this.offsetValue.toString() };
  }

  static fromState(state: PhiloxState): Philox {
    return new Philox(toU64(state.seed, 'state.seed'), toU64(state.offset, 'state.offset'));
  }

  clone(): Philox {
    return new Philox(this.seedValue, this.offsetValue);
  }

  /** An independent generator for sub-task `streamId` (see the module comment); this generator is unchanged. */
  fork(streamId: number | bigint): Philox {
    const [idLo, idHi] = splitU64(toU64(streamId, 'streamId'));
    const [k0, k1] = philox4x32([idLo, idHi, FORK_TAG, 0], this.key);
    return new Philox((BigInt(k1) << 32n) | BigInt(k0));
  }

  /**
   * Reserve `wordCount` words for a native kernel: returns the key and the offset of the first word, and advances
   * this generator past them. The kernel computes word(offset + j) as in the module comment.
   */
  reserve(wordCount: number): { key: [number, number]; offset: bigint } {
    const offset = this.offsetValue;
    this.advance(wordCount);
    return { key: [this.key[0], this.key[1]], offset };
  }

  /** Skip `wordCount` words. */
  advance(wordCount: number): void {
    if (!Number.isSafeInteger(wordCount) || wordCount < 0) {
      throw new RangeError(`word count must be a non-negative integer, got ${wordCount}`);
    }
    this.offsetValue = (this.offsetValue + BigInt(wordCount)) % U64_LIMIT;
  }

  /**
   * Calls `consume(words, count, done)` with the stream's next words in chunks (`done` = values produced before this
   * chunk), `wordsPerValue` words for each of `valueCount` values, and advances the offset.
   */
  private generate(
    valueCount: number,
    wordsPerValue: number,
    consume: (words: Uint32Array, count: number, done: number) => void,
  ): void {
    const valuesPerChunk = Math.floor(CHUNK_WORDS / wordsPerValue);
    for (let done = 0; done < valueCount; done += valuesPerChunk) {
      const count = Math.min(valuesPerChunk, valueCount - done);
      const wordCount = count * wordsPerValue;
      philoxStreamWords(this.key, this.offsetValue, this.scratch, 0, wordCount);
      this.advance(wordCount);
      consume(this.scratch, count, done);
    }
  }

  fillUint32(out: Uint32Array): Uint32Array {
    this.generate(out.length, 1, (words, count, done) => out.set(words.subarray(0, count), done));
    return out;
  }

  /** Uniform values in [0, 1): 24 random bits for a Float32Array (1 word each), 53 for a Float64Array (2 words). */
  fillUniform<T extends Float32Array | Float64Array>(out: T): T {
    if (out instanceof Float32Array) {
      this.generate(out.length, 1, (words, count, done) => {
        for (let i = 0; i < count; i++) out[done + i] = (words[i] >>> 8) * TWO_POW_NEG_24;
      });
    } else {
      this.generate(out.length, 2, (words, count, done) => {
        for (let i = 0; i < count; i++) {
          out[done + i] = ((words[2 * i] >>> 5) * 67108864 + (words[2 * i + 1] >>> 6)) * TWO_POW_NEG_53;
        }
      });
    }
    return out;
  }

  /** One uniform f64 in [0, 1) (2 words). */
  uniform(): number {
    return this.fillUniform(new Float64Array(1))[0];
  }

  /** Normal values N(mean, std^2) by Box-Muller on pairs of words. */
  fillNormal<T extends Float32Array | Float64Array>(out: T, mean = 0, std = 1): T {
    const n = out.length;
    this.generate(Math.ceil(n / 2), 2, (words, pairs, donePairs) => {
      for (let p = 0; p < pairs; p++) {
        const u1 = (words[2 * p] + 1) * TWO_POW_NEG_32;
        const u2 = words[2 * p + 1] * TWO_POW_NEG_32;
        const radius = Math.sqrt(-2 * Math.log(u1));
        const angle = 2 * Math.PI * u2;
        const i = 2 * (donePairs + p);
        out[i] = mean + std * radius * Math.cos(angle);
        if (i + 1 < n) out[i + 1] = mean + std * radius * Math.sin(angle);
      }
    });
    return out;
  }

  /** Standard Gumbel values -ln(-ln u) (1 word each), for gumbel-softmax and sampling by argmax. */
  fillGumbel<T extends Float32Array | Float64Array>(out: T): T {
    this.generate(out.length, 1, (words, count, done) => {
      for (let i = 0; i < count; i++) out[done + i] = -Math.log(-Math.log((words[i] + 0.5) * TWO_POW_NEG_32));
    });
    return out;
  }

  /** Integers uniform in [0, maxExclusive), 1 <= maxExclusive <= 2^31 (2 words each). */
  fillRandint(out: Int32Array, maxExclusive: number): Int32Array {
    if (!Number.isSafeInteger(maxExclusive) || maxExclusive < 1 || maxExclusive > 2 ** 31) {
      throw new RangeError(`maxExclusive must be an integer in [1, 2^31], got ${maxExclusive}`);
    }
    this.generate(out.length, 2, (words, count, done) => {
      for (let i = 0; i < count; i++) {
        const high = words[2 * i];
        const low = words[2 * i + 1];
        // floor((high * 2^32 + low) * m / 2^64) = H1 + carry, with high * m = H1 * 2^32 + L1 and H2 = mulhi(low, m)
        const h1 = mulhi32(high, maxExclusive);
        const l1 = Math.imul(high, maxExclusive) >>> 0;
        const h2 = mulhi32(low, maxExclusive);
        out[done + i] = h1 + (l1 + h2 >= TWO_POW_32 ? 1 : 0);
      }
    });
    return out;
  }

  /** `count` integers uniform in [0, maxExclusive). */
  randint(count: number, maxExclusive: number): Int32Array {
    return this.fillRandint(new Int32Array(count), maxExclusive);
  }
}
