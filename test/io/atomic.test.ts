import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';

import {
  removeStaleTemporaries,
  temporarySiblingPath,
  writeDirectoryAtomic,
  writeDirectoryAtomicSync,
  writeFileAtomic,
  writeFileAtomicSync,
} from '../../src/core/io/atomic';
import { TargetExistsError } from '../../src/core/io/errors';
import { makeTempDir } from './helpers';

describe('io/atomic', () => {
  let dir: string;
  let cleanup: () => void;

  beforeEach(() => ({ dir, cleanup } = makeTempDir('atomic')));
  afterEach(() => cleanup());

  /** Leftover temporary files or directories in `directory`. */
  const leftovers = (directory: string) => fs.readdirSync(directory).filter((name) => /\.tmp-|\.old-/.test(name));

  describe('files', () => {
    it('names the temporary file after the target, the pid and a random suffix, in the same directory', () => {
      const temporary = temporarySiblingPath(path.join(dir, 'model.safetensors'));
      assert.equal(path.dirname(temporary), dir);
      assert.match(path.basename(temporary), new RegExp(`^\\.model\\.safetensors\\.tmp-${process.pid}-[0-9a-f]{12}$`));
      assert.notEqual(temporary, temporarySiblingPath(path.join(dir, 'model.safetensors')));
    });

    it('writes strings, buffers and chunk lists, and leaves no temporary file', () => {
      writeFileAtomicSync(path.join(dir, 'a.txt'), 'héllo\n');
      writeFileAtomicSync(path.join(dir, 'b.bin'), new Uint8Array([1, 2, 3]));
      writeFileAtomicSync(path.join(dir, 'c.bin'), [new Uint8Array([1]), new Uint8Array(0), new Uint8Array([2, 3])]);
      assert.equal(fs.readFileSync(path.join(dir, 'a.txt'), 'utf8'), 'héllo\n');
      assert.deepEqual([...fs.readFileSync(path.join(dir, 'b.bin'))], [1, 2, 3]);
      assert.deepEqual([...fs.readFileSync(path.join(dir, 'c.bin'))], [1, 2, 3]);
      assert.deepEqual(leftovers(dir), []);
    });

    it('replaces an existing file', () => {
      const target = path.join(dir, 'latest');
      writeFileAtomicSync(target, 'step-1');
      writeFileAtomicSync(target, 'step-2');
      assert.equal(fs.readFileSync(target, 'utf8'), 'step-2');
    });

    it('removes the temporary file and keeps the target when the rename fails', () => {
      const target = path.join(dir, 'occupied');
      fs.mkdirSync(target);
      fs.writeFileSync(path.join(target, 'keep'), 'x');
      assert.throws(
        () => writeFileAtomicSync(target, 'data'),
        (err: NodeJS.ErrnoException) => typeof err.code === 'string',
      );
      assert.deepEqual(leftovers(dir), []);
      assert.equal(fs.readFileSync(path.join(target, 'keep'), 'utf8'), 'x');
    });

    it('fails with ENOENT when the directory does not exist', () => {
      assert.throws(() => writeFileAtomicSync(path.join(dir, 'missing', 'f'), 'x'), { code: 'ENOENT' });
    });

    it('has an async version with the same behaviour', async () => {
      const target = path.join(dir, 'async.bin');
      await writeFileAtomic(target, [Buffer.from('ab'), Buffer.from('cd')]);
      await writeFileAtomic(target, 'replaced');
      assert.equal(fs.readFileSync(target, 'utf8'), 'replaced');
      const occupied = path.join(dir, 'occupied');
      fs.mkdirSync(occupied);
      fs.writeFileSync(path.join(occupied, 'keep'), 'x');
      await assert.rejects(writeFileAtomic(occupied, 'data'));
      assert.deepEqual(leftovers(dir), []);
    });
  });

  describe('directories', () => {
    it('creates the directory with its files and its parents, leaving nothing else', () => {
      const target = path.join(dir, 'checkpoints', 'step-10');
      writeDirectoryAtomicSync(target, (temporary) => {
        assert.match(path.basename(temporary), /^step-10\.tmp-/);
        assert.equal(fs.existsSync(target), false, 'the target must not exist while it is being filled');
        fs.writeFileSync(path.join(temporary, 'state.json'), '{"step":10}');
        fs.mkdirSync(path.join(temporary, 'nested'));
        fs.writeFileSync(path.join(temporary, 'nested', 'x'), 'y');
      });
      assert.equal(fs.readFileSync(path.join(target, 'state.json'), 'utf8'), '{"step":10}');
      assert.equal(fs.readFileSync(path.join(target, 'nested', 'x'), 'utf8'), 'y');
      assert.deepEqual(fs.readdirSync(path.join(dir, 'checkpoints')), ['step-10']);
    });

    it('removes the temporary directory and creates nothing when fill throws', () => {
      const target = path.join(dir, 'step-1');
      assert.throws(
        () =>
          writeDirectoryAtomicSync(target, (temporary) => {
            fs.writeFileSync(path.join(temporary, 'half'), 'written');
            throw new Error('disk full');
          }),
        /disk full/,
      );
      assert.deepEqual(fs.readdirSync(dir), []);
    });

    it('refuses an existing target unless asked to replace it', () => {
      const target = path.join(dir, 'step-2');
      writeDirectoryAtomicSync(target, (t) => fs.writeFileSync(path.join(t, 'v'), '1'));
      assert.throws(
        () => writeDirectoryAtomicSync(target, () => assert.fail('fill must not run')),
        (err: unknown) =>
          err instanceof TargetExistsError && err.code === 'EEXIST' && /replace: true/.test(err.message),
      );
      writeDirectoryAtomicSync(target, (t) => fs.writeFileSync(path.join(t, 'v'), '2'), { replace: true });
      assert.equal(fs.readFileSync(path.join(target, 'v'), 'utf8'), '2');
      assert.deepEqual(fs.readdirSync(dir), ['step-2']);
    });

    it('has an async version with the same behaviour', async () => {
      const target = path.join(dir, 'runs', 'step-3');
      await writeDirectoryAtomic(target, async (temporary) => {
        await fs.promises.writeFile(path.join(temporary, 'model.safetensors'), 'm');
      });
      assert.equal(fs.readFileSync(path.join(target, 'model.safetensors'), 'utf8'), 'm');
      await assert.rejects(
        writeDirectoryAtomic(target, () => undefined),
        TargetExistsError,
      );
      await assert.rejects(
        writeDirectoryAtomic(path.join(dir, 'runs', 'step-4'), async () => {
          throw new Error('interrupted');
        }),
        /interrupted/,
      );
      assert.deepEqual(fs.readdirSync(path.join(dir, 'runs')), ['step-3']);
      await writeDirectoryAtomic(target, (t) => fs.writeFileSync(path.join(t, 'model.safetensors'), 'n'), {
        replace: true,
      });
      assert.equal(fs.readFileSync(path.join(target, 'model.safetensors'), 'utf8'), 'n');
      assert.deepEqual(fs.readdirSync(path.join(dir, 'runs')), ['step-3']);
    });
  });

  describe('leftovers of interrupted writes', () => {
    it('removeStaleTemporaries removes our temporary files and directories in a folder, nothing else', () => {
      // What a kill mid-write leaves: a temporary file, a checkpoint directory being filled, one set aside.
      const leftFile = temporarySiblingPath(path.join(dir, 'config.yaml'));
      fs.writeFileSync(leftFile, 'half a config');
      const leftDirectory = fs.mkdtempSync(path.join(dir, 'step-8.tmp-'));
      fs.writeFileSync(path.join(leftDirectory, 'model.safetensors'), 'half a checkpoint');
      const setAside = path.join(dir, 'step-4.old-0123456789ab');
      fs.mkdirSync(setAside);
      // Names a user may have chosen, or ours in a sub-folder: kept.
      const kept = ['notes.tmp-keep', '.a.tmp-12-short', 'step-9.tmp-abcdef', 'config.yaml', 'sub'];
      fs.mkdirSync(path.join(dir, 'notes.tmp-keep'));
      fs.writeFileSync(path.join(dir, '.a.tmp-12-short'), '');
      fs.writeFileSync(path.join(dir, 'step-9.tmp-abcdef'), 'a file, not a directory');
      fs.writeFileSync(path.join(dir, 'config.yaml'), 'kind: dvae\n');
      fs.mkdirSync(path.join(dir, 'sub'));
      fs.mkdirSync(path.join(dir, 'sub', 'step-1.tmp-Ab12Cd'));

      assert.deepEqual(removeStaleTemporaries(dir).sort(), [leftFile, leftDirectory, setAside].sort());
      assert.deepEqual(fs.readdirSync(dir).sort(), kept.sort());
      assert.deepEqual(fs.readdirSync(path.join(dir, 'sub')), ['step-1.tmp-Ab12Cd']);
      assert.deepEqual(removeStaleTemporaries(path.join(dir, 'missing')), []);
    });
  });
});
