/**
 * The error raised for a bad tokenizer file, a bad training request, or text that cannot be encoded. The message names
 * the file (when there is one), what is wrong and what to do; `hint` repeats the advice for the CLI's "Try this".
 */
export class TokenizerError extends Error {
  override name = 'TokenizerError';

  constructor(
    /** What is wrong, e.g. 'model.merges[12] refers to "ab", which is not in model.vocab'. */
    readonly detail: string,
    /** What the user can do about it. */
    readonly hint: string,
    /** The tokenizer file, when the problem is in one. */
    readonly file?: string,
  ) {
    super(`${file === undefined ? '' : `tokenizer file ${JSON.stringify(file)}: `}${detail}. ${hint}`);
  }
}
