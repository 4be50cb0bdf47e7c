import * as path from 'node:path';
import { Flags } from '@oclif/core';
import { BaseCommand } from '../../cli/base-command';
import { ConfigUse } from '../../cli/config-use';
import { priorConfig } from '../../core/config';

export interface TokenizerTrainResult {
  readonly out: string;
  readonly captions: number;
  /** Tokens: 256 byte symbols + merges that made a new token. */
  readonly vocabSize: number;
  readonly merges: number;
  readonly lowercase: boolean;
}

export default class TokenizerTrainCommand extends BaseCommand<typeof TokenizerTrainCommand> {
  static override summary = 'Learn a byte-level BPE vocabulary for captions and write it as a tokenizer.json.';

  static override description =
    'Reads one caption a line (blank lines skipped), lower-cases them if asked (the paper does), and learns byte-level ' +
    'BPE merges (GPT-2 style: any UTF-8 text, emoji included, is covered by the 256 byte symbols). The vocabulary is ' +
    'the 256 bytes plus the first merges learned, VOCAB tokens in all; the file is a Hugging Face tokenizer.json that ' +
    'other tools read. --vocab and --lowercase default to model.text_vocab and data.lowercase of the prior config.';

  static override examples = [
    '<%= config.bin %> <%= command.id %> --captions data/emoji/captions.txt --vocab 1024 --out runs/tokenizer.json',
    '<%= config.bin %> <%= command.id %> --captions captions.txt --config configs/prior-emoji.yaml --out tokenizer.json',
  ];

  static override flags = {
    captions: Flags.string({ summary: 'Text file with one caption a line.', required: true, helpValue: 'FILE' }),
    vocab: Flags.integer({ summary: 'Tokens in the vocabulary, 256 bytes included (default: model.text_vocab).', min: 256 }),
    lowercase: Flags.boolean({ summary: 'Lower-case captions before BPE (default: data.lowercase).', allowNo: true }),
    out: Flags.string({ summary: 'Where to write the tokenizer.json (atomically; its folder is created if missing).', required: true, helpValue: 'FILE' }),
  };

  static override configUse: ConfigUse = { keys: ['model.text_vocab', 'data.lowercase'], note: 'the tokenizer is trained with the prior config\'s vocabulary size and case only' };

  async run(): Promise<TokenizerTrainResult> {
    const { readCaptionLines, TextTokenizer } = await import('../../core/text');
    const config = this.loadConfig(priorConfig);
    const vocabSize = this.flags.vocab ?? config.model.text_vocab;
    const lowercase = this.flags.lowercase ?? config.data.lowercase;
    const { makeOutputFolder, preflightOutputFile } = await import('../../core/io/preflight');
    preflightOutputFile(this.flags.out); // a bad --out fails before the training, not after
    const captions = readCaptionLines(this.flags.captions);
    const tokenizer = await TextTokenizer.train(captions, { vocabSize, lowercase });
    makeOutputFolder(path.dirname(path.resolve(this.flags.out)));
    tokenizer.save(this.flags.out);
    this.log(`trained ${tokenizer.vocabSize} tokens (256 bytes + ${tokenizer.mergeCount} merges) from ` +
      `${captions.length} captions${lowercase ? ', lower-cased' : ''} -> ${this.flags.out}`);
    return { out: this.flags.out, captions: captions.length, vocabSize: tokenizer.vocabSize, merges: tokenizer.mergeCount, lowercase };
  }
}
