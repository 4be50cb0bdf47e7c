/** Picks how events are drawn: JSON lines under --json, bars on a terminal, plain lines otherwise. */
import { JsonLinesRenderer } from './json-lines';
import { PlainRenderer } from './plain';
import { EventRenderer } from './renderer';
import { TtyRenderer } from './tty';
import { WarningsOnlyRenderer } from './warnings-only';

export interface RendererChoice {
  readonly json: boolean;
  /** Writes one line of JSON to stdout (the command's own writer, so tests capture it). */
  readonly writeJsonLine: (line: string) => void;
  readonly stderr?: NodeJS.WriteStream;
  /** Draw only warnings (a data-parallel rank other than 0). */
  readonly warningsOnly?: boolean;
}

export function createRenderer(choice: RendererChoice): EventRenderer {
  const renderer = createFullRenderer(choice);
  return choice.warningsOnly ? new WarningsOnlyRenderer(renderer) : renderer;
}

function createFullRenderer(choice: RendererChoice): EventRenderer {
  if (choice.json) return new JsonLinesRenderer(choice.writeJsonLine);
  const stderr = choice.stderr ?? process.stderr;
  if (stderr.isTTY) return new TtyRenderer(stderr);
  return new PlainRenderer((line) => stderr.write(`${line}\n`));
}

export { EventRenderer } from './renderer';
export { JsonLinesRenderer } from './json-lines';
export { PlainRenderer } from './plain';
export { TtyRenderer } from './tty';
export { WarningsOnlyRenderer } from './warnings-only';
