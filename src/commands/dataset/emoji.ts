import { Flags } from '@oclif/core';
import { BaseCommand } from '../../cli/base-command';
import { ConfigUse } from '../../cli/config-use';
import { dvaeConfig } from '../../core/config';
import { buildEmojiDataset, EMOJI_SETS, EmojiDatasetResult } from '../../core/data';
import { CoreEmitter } from '../../core/events';
import { preflightOutputFolder } from '../../core/io/preflight';

export default class DatasetEmojiCommand extends BaseCommand<typeof DatasetEmojiCommand> {
  static override summary = 'Render the openly licensed emoji sets into an image + caption data set (no download).';

  static override description = [
    'Renders the emoji of the @iconify-json sets installed with dalle (noto, twemoji, openmoji, fluent) to PNGs on ' +
      'white, each with a caption such as "red apple, noto style", and splits them deterministically (by --seed): ' +
      'train; val (5% of emoji, every style, never seen in training); zeroshot (for 5% of the emoji drawn in two or ' +
      'more styles, one style held out while the others stay in train).',
    'Writes DIR/{train,val,zeroshot}/NNNNNN.png + .txt, a manifest.jsonl per split, dataset.json (sets, versions, ' +
      'licences, counts, the split rule) and LICENSES.md. DIR appears only when complete.',
  ].join('\n\n');

  static override examples = [
    {
      description: 'The whole data set (about 15k pairs) at 64 px, for configs/dvae-emoji.yaml.',
      command: '<%= config.bin %> <%= command.id %> --out data/emoji',
    },
    {
      description: 'A small sample to try things out.',
      command: '<%= config.bin %> <%= command.id %> --out /tmp/emoji-small --size 200 --resolution 32',
    },
    {
      description: 'Two styles only, another split.',
      command: '<%= config.bin %> <%= command.id %> --out data/emoji-2 --styles noto,twemoji --seed 1',
    },
  ];

  static override flags = {
    out: Flags.string({ char: 'o', summary: 'Folder to create (must not exist unless --force).', required: true }),
    size: Flags.integer({ summary: 'Most image + caption pairs to render; 0 = all.', default: 0, min: 0 }),
    resolution: Flags.integer({ summary: 'Side of the square PNGs in pixels.', default: 64, min: 1, max: 4096 }),
    styles: Flags.string({
      summary: `Comma-separated styles to render (${EMOJI_SETS.map((set) => set.style).join(',')}).`,
      default: EMOJI_SETS.map((set) => set.style).join(','),
    }),
    force: Flags.boolean({ summary: 'Replace --out if it exists.', default: false }),
  };

  static override configUse: ConfigUse = { keys: ['runtime.seed'], note: "its other settings are this command's flags" };

  async run(): Promise<EmojiDatasetResult> {
    preflightOutputFolder(this.flags.out); // a --out that cannot be written fails before the rendering
    const events = this.renderEvents(new CoreEmitter());
    const result = await buildEmojiDataset({
      out: this.flags.out,
      size: this.flags.size,
      resolution: this.flags.resolution,
      styles: this.flags.styles.split(',').map((style) => style.trim()).filter((style) => style !== ''),
      seed: this.loadConfig(dvaeConfig).runtime.seed,
      force: this.flags.force,
      events,
    });
    const { train, val, zeroshot } = result.pairs;
    this.log(`${train + val + zeroshot} images in ${result.out}: train ${train}, val ${val}, zeroshot ${zeroshot}`);
    if (result.skipped.total > 0) this.log(`skipped ${result.skipped.total} icons that could not be drawn`);
    this.log(`licences: ${result.out}/LICENSES.md (keep it with the images)`);
    return result;
  }
}
