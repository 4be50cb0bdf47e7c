/**
 * A strict JSON parser (RFC 8259) for headers of untrusted files.
 *
 * Why not JSON.parse: it silently keeps the last of duplicate keys (a safetensors header with two entries of the same
 * name must be rejected, not resolved), and its objects treat a key such as "__proto__" specially when copied around.
 * Here objects are Maps, duplicate keys and nesting deeper than `maxDepth` are errors, and every error carries the
 * character position. Numbers are JS numbers (callers check that the integers they need are safe integers).
 */

export type JsonValue = null | boolean | number | string | JsonValue[] | JsonObject;
export type JsonObject = Map<string, JsonValue>;

export class JsonSyntaxError extends Error {
  override name = 'JsonSyntaxError';

  constructor(
    readonly reason: string,
    readonly position: number,
  ) {
    super(`${reason} at character ${position}`);
  }
}

const enum Char {
  Tab = 0x09,
  Newline = 0x0a,
  Return = 0x0d,
  Space = 0x20,
  Quote = 0x22,
  Plus = 0x2b,
  Comma = 0x2c,
  Minus = 0x2d,
  Dot = 0x2e,
  Slash = 0x2f,
  Zero = 0x30,
  Nine = 0x39,
  Colon = 0x3a,
  UpperE = 0x45,
  OpenBracket = 0x5b,
  Backslash = 0x5c,
  CloseBracket = 0x5d,
  LowerE = 0x65,
  OpenBrace = 0x7b,
  CloseBrace = 0x7d,
}

const SIMPLE_ESCAPES: Record<string, string> = {
  '"': '"',
  '\\': '\\',
  '/': '/',
  b: '\b',
  f: '\f',
  n: '\n',
  r: '\r',
  t: '\t',
};

class Parser {
  private position = 0;

  constructor(
    private readonly text: string,
    private readonly maxDepth: number,
  ) {}

  parseDocument(): JsonValue {
    this.skipWhitespace();
    const value = this.parseValue(0);
    this.skipWhitespace();
    if (this.position !== this.text.length) this.fail('unexpected text after the end of the JSON value');
    return value;
  }

  private fail(reason: string): never {
    throw new JsonSyntaxError(reason, this.position);
  }

  private skipWhitespace(): void {
    const text = this.text;
    while (this.position < text.length) {
      const c = text.charCodeAt(this.position);
      if (c !== Char.Space && c !== Char.Tab && c !== Char.Newline && c !== Char.Return) break;
      this.position++;
    }
  }

  private parseValue(depth: number): JsonValue {
    if (this.position >= this.text.length) this.fail('unexpected end of JSON');
    const c = this.text.charCodeAt(this.position);
    if (c === Char.OpenBrace) return this.parseObject(depth + 1);
    if (c === Char.OpenBracket) return this.parseArray(depth + 1);
    if (c === Char.Quote) return this.parseString();
    if (c === Char.Minus || (c >= Char.Zero && c <= Char.Nine)) return this.parseNumber();
    if (this.text.startsWith('true', this.position)) return this.literal(4, true);
    if (this.text.startsWith('false', this.position)) return this.literal(5, false);
    if (this.text.startsWith('null', this.position)) return this.literal(4, null);
    return this.fail(`unexpected character ${JSON.stringify(this.text[this.position])}`);
  }

  private literal<T>(length: number, value: T): T {
    this.position += length;
    return value;
  }

  private enter(depth: number): void {
    if (depth > this.maxDepth) this.fail(`nesting deeper than ${this.maxDepth} levels`);
    this.position++; // the opening bracket or brace
    this.skipWhitespace();
  }

  private parseObject(depth: number): JsonObject {
    this.enter(depth);
    const object: JsonObject = new Map();
    if (this.text.charCodeAt(this.position) === Char.CloseBrace) {
      this.position++;
      return object;
    }
    for (;;) {
      if (this.text.charCodeAt(this.position) !== Char.Quote) this.fail('expected a string key');
      const keyPosition = this.position;
      const key = this.parseString();
      if (object.has(key)) throw new JsonSyntaxError(`duplicate key ${JSON.stringify(key)}`, keyPosition);
      this.skipWhitespace();
      if (this.text.charCodeAt(this.position) !== Char.Colon) this.fail("expected ':' after an object key");
      this.position++;
      this.skipWhitespace();
      object.set(key, this.parseValue(depth));
      this.skipWhitespace();
      const c = this.text.charCodeAt(this.position);
      this.position++;
      if (c === Char.CloseBrace) return object;
      if (c !== Char.Comma) {
        this.position--;
        this.fail("expected ',' or '}' in an object");
      }
      this.skipWhitespace();
    }
  }

  private parseArray(depth: number): JsonValue[] {
    this.enter(depth);
    const array: JsonValue[] = [];
    if (this.text.charCodeAt(this.position) === Char.CloseBracket) {
      this.position++;
      return array;
    }
    for (;;) {
      array.push(this.parseValue(depth));
      this.skipWhitespace();
      const c = this.text.charCodeAt(this.position);
      this.position++;
      if (c === Char.CloseBracket) return array;
      if (c !== Char.Comma) {
        this.position--;
        this.fail("expected ',' or ']' in an array");
      }
      this.skipWhitespace();
    }
  }

  private parseString(): string {
    const text = this.text;
    this.position++; // opening quote
    let result = '';
    let runStart = this.position;
    for (;;) {
      if (this.position >= text.length) this.fail('unterminated string');
      const c = text.charCodeAt(this.position);
      if (c === Char.Quote) {
        result += text.slice(runStart, this.position);
        this.position++;
        return result;
      }
      if (c < Char.Space) this.fail('control character in a string (it must be escaped)');
      if (c !== Char.Backslash) {
        this.position++;
        continue;
      }
      result += text.slice(runStart, this.position);
      this.position++;
      const escape = text[this.position];
      if (escape === 'u') {
        result += this.parseUnicodeEscape();
      } else if (escape !== undefined && Object.prototype.hasOwnProperty.call(SIMPLE_ESCAPES, escape)) {
        result += SIMPLE_ESCAPES[escape];
        this.position++;
      } else {
        this.fail('invalid escape sequence in a string');
      }
      runStart = this.position;
    }
  }

  /** `\uXXXX`, or a surrogate pair `\uD8xx\uDCxx`; a lone surrogate is an error (it is not valid Unicode text). */
  private parseUnicodeEscape(): string {
    const high = this.readHex4();
    if (high >= 0xdc00 && high <= 0xdfff) this.fail('lone low surrogate in a \\u escape');
    if (high < 0xd800 || high > 0xdbff) return String.fromCharCode(high);
    if (this.text[this.position] !== '\\' || this.text[this.position + 1] !== 'u') {
      this.fail('lone high surrogate in a \\u escape');
    }
    this.position++;
    const low = this.readHex4();
    if (low < 0xdc00 || low > 0xdfff) this.fail('invalid surrogate pair in a \\u escape');
    return String.fromCharCode(high, low);
  }

  /** Reads the 'u' and four hex digits after it. */
  private readHex4(): number {
    const digits = this.text.slice(this.position + 1, this.position + 5);
    if (!/^[0-9a-fA-F]{4}$/.test(digits)) this.fail('invalid \\u escape');
    this.position += 5;
    return parseInt(digits, 16);
  }

  private parseNumber(): number {
    const text = this.text;
    const start = this.position;
    const digitsFrom = (from: number): number => {
      let p = from;
      while (p < text.length && text.charCodeAt(p) >= Char.Zero && text.charCodeAt(p) <= Char.Nine) p++;
      return p;
    };
    let p = start;
    if (text.charCodeAt(p) === Char.Minus) p++;
    if (text.charCodeAt(p) === Char.Zero) {
      p++;
    } else {
      const end = digitsFrom(p);
      if (end === p) this.fail('invalid number');
      p = end;
    }
    if (text.charCodeAt(p) === Char.Dot) {
      const end = digitsFrom(p + 1);
      if (end === p + 1) this.fail('invalid number: no digits after the decimal point');
      p = end;
    }
    const e = text.charCodeAt(p);
    if (e === Char.LowerE || e === Char.UpperE) {
      p++;
      const sign = text.charCodeAt(p);
      if (sign === Char.Plus || sign === Char.Minus) p++;
      const end = digitsFrom(p);
      if (end === p) this.fail('invalid number: no digits in the exponent');
      p = end;
    }
    this.position = p;
    return Number(text.slice(start, p));
  }
}

/** Parse `text` as one JSON value (surrounding whitespace allowed). Throws JsonSyntaxError. */
export function parseStrictJson(text: string, maxDepth = 64): JsonValue {
  return new Parser(text, maxDepth).parseDocument();
}

export function isJsonObject(value: JsonValue): value is JsonObject {
  return value instanceof Map;
}
