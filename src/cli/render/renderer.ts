/** What a command uses to draw core events. */
import { CoreEvent } from '../../core/events';

export interface EventRenderer {
  handle(event: CoreEvent): void;
  /** Finishes drawing (stops bars, restores the cursor); called once, also when the command fails. */
  close(): void;
}
