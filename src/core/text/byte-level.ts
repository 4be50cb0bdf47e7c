/**
 * GPT-2's byte-level alphabet (Radford et al. 2019; `bytes_to_unicode` in openai/gpt-2 encoder.py, and the ByteLevel
 * pre-tokenizer and decoder of Hugging Face tokenizers): every byte 0..255 is one printable character, so that BPE
 * tokens are strings and any UTF-8 text (emoji included) is covered by 256 base symbols with no unknown token.
 * Printable Latin-1 bytes (33..126, 161..172, 174..255) stand for themselves; the others (control bytes, space, 127..160,
 * 173) map in order to U+0100, U+0101, ... (space -> 'Ġ', newline -> 'Ċ').
 */

function isPrintable(byte: number): boolean {
  return (byte >= 33 && byte <= 126) || (byte >= 161 && byte <= 172) || (byte >= 174 && byte <= 255);
}

function buildTables(): { byteToChar: string[]; charToByte: Map<string, number> } {
  const byteToChar: string[] = [];
  const charToByte = new Map<string, number>();
  let next = 0;
  for (let byte = 0; byte < 256; byte++) {
    const code = isPrintable(byte) ? byte : 256 + next++;
    byteToChar.push(String.fromCharCode(code));
    charToByte.set(byteToChar[byte], byte);
  }
  return { byteToChar, charToByte };
}

const TABLES = buildTables();

/** BYTE_TO_CHAR[b] = the character that stands for byte b. */
export const BYTE_TO_CHAR: readonly string[] = TABLES.byteToChar;
/** The inverse of BYTE_TO_CHAR. */
export const CHAR_TO_BYTE: ReadonlyMap<string, number> = TABLES.charToByte;

/** Text -> its UTF-8 bytes, each written as its byte-level character. */
export function toByteLevel(text: string): string {
  let out = '';
  for (const byte of Buffer.from(text, 'utf8')) out += BYTE_TO_CHAR[byte];
  return out;
}

/**
 * Byte-level characters -> bytes, as the ByteLevel decoder does: a character outside the alphabet (possible only in a
 * token of a foreign file) stands for its own UTF-8 bytes.
 */
export function byteLevelToBytes(chars: string, out: number[] = []): number[] {
  for (const char of chars) {
    const byte = CHAR_TO_BYTE.get(char);
    if (byte !== undefined) out.push(byte);
    else for (const b of Buffer.from(char, 'utf8')) out.push(b);
  }
  return out;
}
