import { Args, Flags } from '@oclif/core';
import { BaseCommand } from '../../cli/base-command';
import { ConfigUse } from '../../cli/config-use';
import { dvaeConfig } from '../../core/config';

export interface TokenizerEncodeResult {
  readonly ids: number[];
  /** The token strings, bytes shown as text where they are valid UTF-8 on their own. */
  readonly tokens: string[];
  readonly decoded: string;
}

export default class TokenizerEncodeCommand extends BaseCommand<typeof TokenizerEncodeCommand> {
  static override summary = 'Show the BPE tokens of a text (optionally with BPE dropout, as in training).';

  static override examples = [
    '<%= config.bin %> <%= command.id %> --tokenizer runs/tokenizer.json "a smiling cat"',
    '<%= config.bin %> <%= command.id %> --tokenizer runs/tokenizer.json --dropout 0.1 --seed 3 "a smiling cat" --json',
  ];

  // the words of the text may come unquoted: `dalle tokenizer encode --tokenizer t.json a smiling cat`
  static override strict = false;

  static override args = {
    text: Args.string({ description: 'The text to encode (several arguments are joined by spaces).', required: true }),
  };

  static override flags = {
    tokenizer: Flags.string({ summary: 'A tokenizer.json.', required: true, helpValue: 'FILE' }),
    dropout: Flags.string({ summary: 'BPE dropout probability in [0, 1] (drawn from --seed).', default: '0' }),
  };

  static override configUse: ConfigUse = { keys: ['runtime.seed'], note: "its other settings are this command's flags" };

  async run(): Promise<TokenizerEncodeResult> {
    const { TextTokenizer, TokenizerError } = await import('../../core/text');
    const { Philox } = await import('../../core/tensor/rng');
    const dropout = Number(this.flags.dropout);
    if (!(dropout >= 0 && dropout <= 1)) {
      throw new TokenizerError(`--dropout must be a number in [0, 1], got ${JSON.stringify(this.flags.dropout)}`,
        'Pass e.g. --dropout 0.1 (the paper\'s training value) or 0');
    }
    const tokenizer = TextTokenizer.load(this.flags.tokenizer);
    const rng = new Philox(this.loadConfig(dvaeConfig).runtime.seed);
    const { argv } = await this.parse(TokenizerEncodeCommand);
    const text = (argv as string[]).join(' ');
    const ids = tokenizer.encode(text, { dropout, rng });
    const tokens = ids.map((id) => tokenizer.decode([id]));
    const decoded = tokenizer.decode(ids);
    this.log(`${ids.length} tokens: ${ids.join(' ')}`);
    this.log(tokens.map((token) => JSON.stringify(token)).join(' '));
    return { ids, tokens, decoded };
  }
}
