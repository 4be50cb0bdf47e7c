/** Draws only warnings: a data-parallel rank other than 0 (cli/data-parallel.ts), whose rank 0 draws the progress. */
import { CoreEvent } from '../../core/events';
import { EventRenderer } from './renderer';

export class WarningsOnlyRenderer implements EventRenderer {
  constructor(private readonly inner: EventRenderer) {}

  handle(event: CoreEvent): void {
    if (event.type === 'log' && event.level === 'warn') this.inner.handle(event);
  }

  close(): void {
    this.inner.close();
  }
}
