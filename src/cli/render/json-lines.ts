/** --json: one JSON object per line on stdout for every event; the command's result is the last line. */
import { CoreEvent } from '../../core/events';
import { EventRenderer } from './renderer';

export class JsonLinesRenderer implements EventRenderer {
  constructor(private readonly writeLine: (line: string) => void) {}

  handle(event: CoreEvent): void {
    this.writeLine(JSON.stringify(event));
  }

  close(): void {}
}
