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
  const document = YAML.parseDocument(text, { lineCounter, uniqueKeys: true });
  const firstError = document.errors[0];
  if (firstError !== undefined) throw malformed(path, firstError);

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

// The yaml package's messages read "Problem at line 5, column 3:\n\n<source excerpt>\n"; we keep the problem, move the
// position into our file:line:column prefix, and offer the excerpt as the hint.
function malformed(path: string, error: YAML.YAMLError): ConfigError {
  const [head, ...excerpt] = error.message.split('\n');
  const problem = head.replace(/ at line \d+, column \d+:?$/, '');
  const position = error.linePos?.[0];
  return new ConfigError(`malformed YAML: ${problem}`, {
    file: path,
    line: position?.line,
    column: position?.col,
    hint: `fix the YAML syntax here:\n${excerpt.join('\n').replace(/\n+$/, '')}`,
  });
}
