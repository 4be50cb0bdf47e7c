/**
 * Reading a YAML config file into a parsed document that still knows the line and column of every node, so each
 * error can point at `file:line:column`.
 */
import YAML, { Document, LineCounter, Node as YamlNode, Scalar } from 'yaml';
import { TextFileError } from '../io/errors';
import { readTextFileSync, TEXT_LIMITS } from '../io/text-file';
import { ConfigError, ConfigLocation } from './errors';
import { KIND_KEY } from './schema';

export interface ConfigFile {
  readonly path: string;
  readonly document: Document.Parsed;
  /** The top-level mapping; null for an empty file. */
  readonly root: YAML.YAMLMap | null;
  /** The value of the `kind:` line, or undefined when the file has none. */
  readonly kind: string | undefined;
  /** Where the `kind:` value is (or the top of the file when there is none). */
  readonly kindLocation: ConfigLocation;
  /** Line and column of a node of this document. */
  locate(node: YamlNode | null | undefined): ConfigLocation;
}

/** Reads and parses a config file; throws ConfigError for a missing file or malformed YAML. */
export function readConfigFile(path: string): ConfigFile {
  const text = readText(path);
  const lineCounter = new LineCounter();
  const document = parseYaml(path, text, lineCounter);
  const firstError = document.errors[0];
  if (firstError !== undefined) throw malformed(path, firstError, text, lineCounter);

  const locate = (node: YamlNode | null | undefined): ConfigLocation => {
    if (node?.range == null) return { file: path };
    const { line, col } = lineCounter.linePos(node.range[0]);
    return { file: path, line, column: col };
  };

  const contents = document.contents;
  if (contents !== null && !YAML.isMap(contents)) {
    throw new ConfigError('expected a mapping of keys at the top level (`kind: ...`, then sections)', {
      ...locate(contents),
      hint: 'start from one of the files in configs/',
    });
  }
  const kindNode = contents?.get(KIND_KEY, true) as YamlNode | undefined;
  const kindValue = kindNode instanceof Scalar ? kindNode.value : undefined;
  return {
    path,
    document,
    root: contents,
    kind: kindValue === undefined || kindValue === null ? undefined : String(kindValue),
    kindLocation: kindNode === undefined ? { file: path, line: 1, column: 1 } : locate(kindNode),
    locate,
  };
}

/**
 * The yaml package reports syntax errors in `document.errors`, but its parser recurses once per nesting level and so
 * throws a RangeError (call stack exceeded) on thousands of nested mappings (`a: a: a: ...`): that is a malformed
 * config too. Its "pretty" errors are off: it would add the line, column and a source excerpt to every error, each
 * found by a scan from the top, so thousands of errors in one file took seconds per 100 KB (found by test/fuzz);
 * only the first error is reported, and malformed() describes it.
 */
function parseYaml(path: string, text: string, lineCounter: LineCounter): Document.Parsed {
  try {
    return YAML.parseDocument(text, { lineCounter, uniqueKeys: true, prettyErrors: false });
  } catch (error) {
    if (!(error instanceof RangeError)) throw error;
    throw new ConfigError(`malformed YAML: nested too deeply to parse (${error.message})`, {
      file: path,
      hint: 'a config nests sections a few levels deep (train: grad_scale: init: ...); start from one of the files in configs/',
    });
  }
}

function readText(path: string): string {
  try {
    return readTextFileSync(path, TEXT_LIMITS.config);
  } catch (error) {
    if (error instanceof TextFileError) {
      throw new ConfigError(`cannot read the config file: ${error.detail}`, { file: path, line: error.line, hint: error.hint });
    }
    const code = (error as NodeJS.ErrnoException).code;
    const reason = code === 'ENOENT' ? 'no such file' : code === 'EISDIR' ? 'is a directory' : String(error);
    throw new ConfigError(`cannot read the config file: ${reason}`, {
      file: path,
      hint: 'check the path; the shipped configs are in configs/ (dvae-paper.yaml, dvae-emoji.yaml, ...)',
    });
  }
}

/** Longest part of the offending line shown in the hint. */
const EXCERPT_CHARS = 120;

// The problem with our file:line:column prefix, and the offending line with a caret under the column as the hint.
function malformed(path: string, error: YAML.YAMLError, text: string, lineCounter: LineCounter): ConfigError {
  const { line, col } = lineCounter.linePos(error.pos[0]);
  const lineStart = lineCounter.lineStarts[line - 1] ?? 0;
  const lineEnd = text.indexOf('\n', lineStart);
  const shownFrom = Math.max(0, col - 1 - EXCERPT_CHARS / 2);
  const source = text.slice(lineStart, lineEnd < 0 ? text.length : lineEnd).slice(shownFrom, shownFrom + EXCERPT_CHARS).trimEnd();
  return new ConfigError(`malformed YAML: ${error.message.split('\n')[0]}`, {
    file: path,
    line,
    column: col,
    hint: `fix the YAML syntax here:\n${source}\n${' '.repeat(col - 1 - shownFrom)}^`,
  });
}
