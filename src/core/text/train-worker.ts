/**
 * Child process of TextTokenizer.train: trains Hugging Face's BPE on a caption file and saves the library's raw
 * tokenizer.json. It runs in its own process because the library's trainer writes progress lines straight to file
 * descriptor 1, which would corrupt a command's --json output, and because training blocks its thread.
 *
 * Usage: node train-worker.js CAPTIONS_FILE OUT_JSON LOWERCASE(0|1)
 */
import { BPE, byteLevelPreTokenizer, lowercase, Tokenizer } from 'tokenizers';

function main(argv: string[]): void {
  const [captionsFile, outFile, lower] = argv;
  if (captionsFile === undefined || outFile === undefined || (lower !== '0' && lower !== '1')) {
    throw new Error('usage: node train-worker.js CAPTIONS_FILE OUT_JSON LOWERCASE(0|1)');
  }
  const tokenizer = new Tokenizer(BPE.empty());
  if (lower === '1') tokenizer.setNormalizer(lowercase());
  // GPT-2's pre-tokenizer: its regex splits words, numbers and punctuation; no prefix space, so decode(encode(x)) = x
  tokenizer.setPreTokenizer(byteLevelPreTokenizer(false, true));
  tokenizer.train([captionsFile]);
  tokenizer.save(outFile, false);
}

main(process.argv.slice(2));
