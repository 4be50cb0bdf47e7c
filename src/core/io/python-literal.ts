/**
 * A parser for the small subset of Python literal syntax that NumPy writes in .npy headers, e.g.
 *   {'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }
 * (NumPy itself reads the header with ast.literal_eval.) Supported: dicts with string keys, tuples, lists, strings
 * in single or double quotes without escapes, True/False/None, and decimal integers (an old Python 2 'L' suffix is
 * accepted, as NumPy does). Anything else is an error with its character position.
 */

/** A Python tuple; a list parses to a plain array, a dict to a Map. */
export class PyTuple {
  constructor(readonly items: PyValue[]) {}
}
export type PyValue = string | number | boolean | null | PyTuple | PyValue[] | Map<string, PyValue>;

export class PythonLiteralError extends Error {
  override name = 'PythonLiteralError';

  constructor(
    readonly reason: string,
    readonly position: number,
  ) {
    super(`${reason} at character ${position}`);
  }
}

const MAX_DEPTH = 16;

class LiteralParser {
  private position = 0;

  constructor(private readonly text: string) {}

  parseDocument(): PyValue {
    const value = this.parseValue(0);
    this.skipWhitespace();
    if (this.position !== this.text.length) this.fail('unexpected text after the literal');
    return value;
  }

  private fail(reason: string): never {
    throw new PythonLiteralError(reason, this.position);
  }

  private skipWhitespace(): void {
    while (this.position < this.text.length && ' \t\n\r'.includes(this.text[this.position])) this.position++;
  }

  private peek(): string {
    this.skipWhitespace();
    return this.text[this.position] ?? '';
  }

  private expect(char: string): void {
    if (this.peek() !== char) this.fail(`expected ${JSON.stringify(char)}`);
    this.position++;
  }

  private parseValue(depth: number): PyValue {
    if (depth > MAX_DEPTH) this.fail(`nesting deeper than ${MAX_DEPTH} levels`);
    const c = this.peek();
    if (c === "'" || c === '"') return this.parseString();
    if (c === '{') return this.parseDict(depth + 1);
    if (c === '[') return this.parseSequence(']', depth + 1);
    if (c === '(') return this.parseParenthesized(depth + 1);
    if (c === '-' || (c >= '0' && c <= '9')) return this.parseInteger();
    for (const [word, value] of [
      ['True', true],
      ['False', false],
      ['None', null],
    ] as const) {
      if (this.text.startsWith(word, this.position) && !/\w/.test(this.text[this.position + word.length] ?? '')) {
        this.position += word.length;
        return value;
      }
    }
    return this.fail(c === '' ? 'unexpected end of the literal' : `unexpected character ${JSON.stringify(c)}`);
  }

  private parseString(): string {
    const quote = this.text[this.position];
    const start = this.position + 1;
    const end = this.text.indexOf(quote, start);
    if (end < 0) this.fail('unterminated string');
    const value = this.text.slice(start, end);
    if (value.includes('\\')) this.fail('escape sequences in strings are not supported');
    if (value.includes('\n')) this.fail('newline in a string');
    this.position = end + 1;
    return value;
  }

  private parseInteger(): number {
    const match = /^-?\d+L?/.exec(this.text.slice(this.position, this.position + 40));
    if (match === null) this.fail('invalid integer');
    const digits = match[0].replace('L', '');
    const value = Number(digits);
    if (!Number.isSafeInteger(value)) this.fail(`integer ${digits} is too large`);
    this.position += match[0].length;
    if (/[\w.]/.test(this.text[this.position] ?? '')) this.fail('only decimal integers are supported');
    return value;
  }

  /** Items up to `close`, separated by commas, with an optional trailing comma. Returns the items and whether a comma was seen. */
  private parseItems(close: string, depth: number): { items: PyValue[]; sawComma: boolean } {
    const items: PyValue[] = [];
    let sawComma = false;
    while (this.peek() !== close) {
      items.push(this.parseValue(depth));
      if (this.peek() === ',') {
        this.position++;
        sawComma = true;
      } else if (this.peek() !== close) {
        this.fail(`expected ',' or ${JSON.stringify(close)}`);
      }
    }
    this.position++;
    return { items, sawComma };
  }

  private parseSequence(close: string, depth: number): PyValue[] {
    this.position++;
    return this.parseItems(close, depth).items;
  }

  /** `()` and `(x,)` and `(x, y)` are tuples; `(x)` is just x, as in Python. */
  private parseParenthesized(depth: number): PyValue {
    this.position++;
    const { items, sawComma } = this.parseItems(')', depth);
    if (items.length === 1 && !sawComma) return items[0];
    return new PyTuple(items);
  }

  private parseDict(depth: number): Map<string, PyValue> {
    this.position++;
    const dict = new Map<string, PyValue>();
    while (this.peek() !== '}') {
      const c = this.peek();
      if (c !== "'" && c !== '"') this.fail('expected a string key');
      const keyPosition = this.position;
      const key = this.parseString();
      if (dict.has(key)) throw new PythonLiteralError(`duplicate key ${JSON.stringify(key)}`, keyPosition);
      this.expect(':');
      dict.set(key, this.parseValue(depth));
      if (this.peek() === ',') this.position++;
      else if (this.peek() !== '}') this.fail("expected ',' or '}'");
    }
    this.position++;
    return dict;
  }
}

export function parsePythonLiteral(text: string): PyValue {
  return new LiteralParser(text).parseDocument();
}
