/** Caption tokens: byte-level BPE with lower-casing and seeded BPE dropout, stored as Hugging Face tokenizer.json. */
export { BpeMerge, BpeMerger } from './bpe-dropout';
export { BYTE_TO_CHAR, CHAR_TO_BYTE, byteLevelToBytes, toByteLevel } from './byte-level';
export { TokenizerError } from './errors';
export { BYTE_VOCAB, EncodeOptions, TextTokenizer, TrainOptions } from './tokenizer';
export { readCaptionLines } from './captions';
export { gpt2Split, lowercaseByChar, wellFormed } from './pre-tokenize';
