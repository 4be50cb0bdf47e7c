/**
 * Failed writes become named errors naming the path the caller wrote (write-errors.ts), wherever atomic writes meet
 * them: a raw errno about a temporary file is what a user must never see.
 */
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';

import { writeDirectoryAtomicSync, writeFileAtomic, writeFileAtomicSync } from '../../src/core/io/atomic';
import { TargetExistsError } from '../../src/core/io/errors';
import { OutputPathError, OutputWriteError, writeFailure } from '../../src/core/io/write-errors';
import { makeTempDir } from './helpers';

describe('io/write-errors', () => {
  let dir: string;
  let cleanup: () => void;

  beforeEach(() => ({ dir, cleanup } = makeTempDir('write-errors')));
  afterEach(() => cleanup());

  it('an atomic file write into a missing folder is an OutputPathError naming the target, not the temporary', async () => {
    const target = path.join(dir, 'missing', 'tokens.npy');
    for (const write of [() => writeFileAtomicSync(target, 'x'), () => writeFileAtomic(target, 'x')]) {
      await assert.rejects(async () => write(), (error: Error) => {
        assert.ok(error instanceof OutputPathError, `${error.name}: ${error.message}`);
        assert.equal(error.code, 'ENOENT');
        assert.equal(error.target, target);
        assert.ok(error.message.includes(target) && !error.message.includes('.tmp-'), error.message);
        assert.equal((error.cause as NodeJS.ErrnoException).code, 'ENOENT');
        return true;
      });
    }
  });

  it('a failed write into an atomic directory names the directory; a failed read in fill is left as it is', () => {
    const target = path.join(dir, 'step-1');
    assert.throws(
      () => writeDirectoryAtomicSync(target, (tmp) => fs.writeFileSync(path.join(tmp, 'no-such-sub', 'f'), 'x')),
      (error: Error) => error instanceof OutputPathError && error.target === target,
    );
    assert.throws(
      () => writeDirectoryAtomicSync(target, () => fs.readFileSync(path.join(dir, 'input-that-is-not-there'))),
      (error: NodeJS.ErrnoException) => !(error instanceof OutputPathError) && error.code === 'ENOENT',
    );
    assert.ok(!fs.existsSync(target));
  });

  it('disk full is an OutputWriteError (exit 5 by its name); errors that are not fs errors pass unchanged', () => {
    const full = Object.assign(new Error('ENOSPC: no space left on device, write'), { code: 'ENOSPC', syscall: 'write' });
    const named = writeFailure(full, '/data/out.npy');
    assert.ok(named instanceof OutputWriteError);
    assert.match(named.message, /no space left on the device to write \/data\/out\.npy/);
    assert.match(named.hint, /free some space on the disk holding \/data/);
    const exists = new TargetExistsError('/data/run');
    assert.equal(writeFailure(exists, '/data/run'), exists);
    const plain = new RangeError('not an fs error');
    assert.equal(writeFailure(plain, '/data/x'), plain);
  });
});
