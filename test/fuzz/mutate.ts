/**
 * Seeded mutations of valid inputs, the fuzzer's inputs: bit flips, bytes set to random or format-significant values,
 * truncations, splices (a chunk of one seed copied into another, a range deleted or repeated), huge lengths (a
 * little-endian integer field, or a run of ASCII digits, replaced by an extreme value), and now and then plain random
 * bytes. Input `index` of a run depends only on (seed, index), so a failure is replayed from those two numbers.
 */
import { makeRandom } from '../harness/random';

type Random = ReturnType<typeof makeRandom>;

/** No mutated input grows past this: the fuzzer looks for parser bugs, not for slow reads of big files. */
export const MAX_INPUT_BYTES = 1 << 20;

/** Bytes that mean something to one of the formats fuzzed: JSON, YAML, CSV, tar octal fields, Python literals. */
const SIGNIFICANT = Buffer.from('{}[]()"\',:;=#&*!|>-\\\n\r\t 0789eE.+xX\x00\x7f\x80\xbf\xc0\xef\xff');

/** Replacements for a run of digits: past every limit, negative, not a number. */
const EXTREME_NUMBERS = ['99999999999999999999', '18446744073709551615', '9007199254740993', '4294967296', '2147483648', '-1', '1e308', '0', '777777777777'];

/** Little-endian integers written over a field: all ones, the sign bit, 2^32, 2^53 + 1. */
const EXTREME_INTEGERS = [0xffffffffffffffffn, 0x7fffffffffffffffn, 0x8000000000000000n, 0x100000000n, 0x20000000000001n, 0xffffffffn, 0x7fffffffn];

export function mutatedInput(seeds: readonly Uint8Array[], seed: number, index: number): Uint8Array {
  const random = makeRandom((Math.imul(seed, 0x9e3779b1) ^ Math.imul(index + 1, 0x85ebca6b)) >>> 0);
  if (random.uniform() < 0.03) return randomBytes(random, random.int(0, 512));
  let bytes: Uint8Array = Uint8Array.from(seeds[random.int(0, seeds.length)]);
  const steps = 1 + Math.floor(-Math.log2(Math.max(random.uniform(), 1e-9))); // 1 most often, sometimes several
  for (let step = 0; step < Math.min(steps, 8); step++) bytes = mutateOnce(bytes, seeds, random);
  return bytes.length > MAX_INPUT_BYTES ? bytes.subarray(0, MAX_INPUT_BYTES) : bytes;
}

function mutateOnce(bytes: Uint8Array, seeds: readonly Uint8Array[], random: Random): Uint8Array {
  const at = (): number => random.int(0, Math.max(1, bytes.length));
  switch (random.int(0, 9)) {
    case 0: { // flip one bit
      if (bytes.length === 0) return bytes;
      bytes[at() % bytes.length] ^= 1 << random.int(0, 8);
      return bytes;
    }
    case 1: { // set a byte to a random or a significant value
      if (bytes.length === 0) return bytes;
      bytes[at() % bytes.length] = random.uniform() < 0.5 ? random.int(0, 256) : SIGNIFICANT[random.int(0, SIGNIFICANT.length)];
      return bytes;
    }
    case 2: // cut short
      return bytes.subarray(0, at());
    case 3: { // splice: a chunk of a seed (maybe this one) inserted at a random place
      const donor = seeds[random.int(0, seeds.length)];
      const from = random.int(0, donor.length + 1);
      const chunk = donor.subarray(from, from + random.int(1, 64));
      const where = at();
      return concat(bytes.subarray(0, where), chunk, bytes.subarray(where));
    }
    case 4: { // delete a range
      const from = at();
      return concat(bytes.subarray(0, from), bytes.subarray(from + random.int(1, 32)));
    }
    case 5: { // repeat a range many times; now and then 100k times (deep nesting when it is a bracket)
      const from = at();
      const chunk = bytes.subarray(from, from + random.int(1, 16));
      const copies = Array.from({ length: random.int(2, random.uniform() < 0.1 ? 100_000 : 2000) }, () => chunk);
      return concat(bytes.subarray(0, from), ...copies, bytes.subarray(from));
    }
    case 6: { // a huge little-endian integer over 1, 2, 4 or 8 bytes
      const width = [1, 2, 4, 8][random.int(0, 4)];
      if (bytes.length < width) return bytes;
      const where = random.uniform() < 0.5 ? 0 : random.int(0, bytes.length - width + 1) & ~(width - 1);
      const value = EXTREME_INTEGERS[random.int(0, EXTREME_INTEGERS.length)];
      for (let i = 0; i < width; i++) bytes[where + i] = Number((value >> BigInt(8 * i)) & 0xffn);
      return bytes;
    }
    case 7: { // a run of ASCII digits replaced by an extreme number (lengths, sizes, counts in text formats)
      const runs = digitRuns(bytes);
      if (runs.length === 0) return bytes;
      const [from, to] = runs[random.int(0, runs.length)];
      return concat(bytes.subarray(0, from), Buffer.from(EXTREME_NUMBERS[random.int(0, EXTREME_NUMBERS.length)]), bytes.subarray(to));
    }
    default: { // overwrite a range with random bytes
      const from = at();
      const noise = randomBytes(random, random.int(1, 16));
      return concat(bytes.subarray(0, from), noise, bytes.subarray(from + noise.length));
    }
  }
}

function digitRuns(bytes: Uint8Array): [number, number][] {
  const runs: [number, number][] = [];
  for (let i = 0; i < bytes.length; i++) {
    if (bytes[i] < 0x30 || bytes[i] > 0x39) continue;
    const start = i;
    while (i < bytes.length && bytes[i] >= 0x30 && bytes[i] <= 0x39) i++;
    runs.push([start, i]);
  }
  return runs;
}

function randomBytes(random: Random, length: number): Uint8Array {
  const bytes = new Uint8Array(length);
  for (let i = 0; i < length; i++) bytes[i] = random.int(0, 256);
  return bytes;
}

function concat(...parts: Uint8Array[]): Uint8Array {
  const total = Math.min(MAX_INPUT_BYTES, parts.reduce((sum, part) => sum + part.length, 0));
  const out = new Uint8Array(total);
  let offset = 0;
  for (const part of parts) {
    if (offset >= total) break;
    const take = part.subarray(0, total - offset);
    out.set(take, offset);
    offset += take.length;
  }
  return out;
}
