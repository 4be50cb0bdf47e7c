/**
 * Writing a resolved config back out as YAML: every key, each with its doc as a comment and, when it is not the
 * default, where its value came from. The output is itself a valid config file of the same kind.
 */
import YAML, { Document } from 'yaml';
import { ConfigLocation, describeLocation } from './errors';
import { ConfigOf, ConfigSchema, isField, Section } from './schema';

export interface FormatOptions {
  /** Where non-default values came from (from resolveConfigWithSources), added to their comments. */
  readonly sources?: ReadonlyMap<string, ConfigLocation>;
  /** Each field's doc as a trailing comment (default true). */
  readonly comments?: boolean;
}

export function formatConfigYaml<C extends ConfigSchema>(
  schema: C,
  config: ConfigOf<C>,
  options: FormatOptions = {},
): string {
  const document = new Document(config);
  document.commentBefore = [
    ` ${schema.doc}`,
    ` Fully resolved "${schema.kind}" config: defaults, then the YAML file, then --set and flags.`,
  ].join('\n');
  decorate(document.contents as YAML.YAMLMap, schema.sections, [], options);
  return document.toString({ lineWidth: 0 });
}

function decorate(map: YAML.YAMLMap, section: Section, path: readonly string[], options: FormatOptions): void {
  for (const [key, node] of Object.entries(section)) {
    const keyPath = [...path, key];
    const valueNode = map.get(key, true) as YAML.Node;
    if (!isField(node)) {
      decorate(valueNode as YAML.YAMLMap, node, keyPath, options);
      continue;
    }
    if (YAML.isSeq(valueNode)) valueNode.flow = true; // short lists read best on one line: [1, 2, 4]
    if (options.comments === false) continue;
    const source = options.sources?.get(keyPath.join('.'));
    // file:line is enough to find a value; the column would only lengthen every line.
    const from = source === undefined ? '' : ` [from ${describeLocation({ ...source, column: undefined })}]`;
    valueNode.comment = ` ${node.doc}${from}`;
  }
}
