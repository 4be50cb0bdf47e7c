#!/usr/bin/env node
// Packs a trained run (dVAE or prior) into a slim model directory for shipping: the run's config.yaml (and
// tokenizer.json), and its latest checkpoint's weights only (no optimizer state), 2-D weights optionally in f16.
// The result is itself a run directory (config.yaml, latest, checkpoints/step-N/{model.safetensors,SHA256SUMS,state.json}), so
// every command that takes --dvae / --prior reads it unchanged (loading casts the weights back to f32).
// Usage: node scripts/pack-model.js RUN OUT_DIR [--f16]
'use strict';
const fs = require('node:fs');
const path = require('node:path');
const root = path.join(__dirname, '..');
const { resolveCheckpoint, MODEL_FILE, STATE_FILE, CHECKPOINTS_DIR, LATEST_FILE } = require(path.join(root, 'dist/src/core/checkpoint'));
const { readSafetensorsSync } = require(path.join(root, 'dist/src/core/io/safetensors'));
const { saveTensors } = require(path.join(root, 'dist/src/core/io/tensors'));
const { Tensor, tidy } = require(path.join(root, 'dist/src/core/tensor'));
const { cast } = require(path.join(root, 'dist/src/core/ops'));
const { writeFileAtomicSync } = require(path.join(root, 'dist/src/core/io/atomic'));
const { CHECKSUMS_FILE, formatChecksums, sha256File } = require(path.join(root, 'dist/src/core/io/checksums'));

function main(argv) {
  const args = argv.filter((a) => !a.startsWith('--'));
  const f16 = argv.includes('--f16');
  if (args.length !== 2) {
    console.error('usage: node scripts/pack-model.js RUN OUT_DIR [--f16]');
    process.exit(2);
  }
  const [run, out] = args;
  const found = resolveCheckpoint(run);
  const step = found.state.step;
  const ckpt = path.join(out, CHECKPOINTS_DIR, `step-${step}`);
  fs.rmSync(out, { recursive: true, force: true });
  fs.mkdirSync(ckpt, { recursive: true });
  const contents = readSafetensorsSync(path.join(found.dir, MODEL_FILE));
  tidy(() => {
    const tensors = new Map();
    for (const [name, host] of contents.tensors) {
      const t = Tensor.from(host.data, host.shape, host.dtype);
      // Matrices and conv kernels in f16 (half the bytes); 1-D gains and biases stay f32 (tiny, and sensitive).
      tensors.set(name, f16 && host.dtype === 'f32' && host.shape.length >= 2 ? cast(t, 'f16') : t);
    }
    saveTensors(path.join(ckpt, MODEL_FILE), tensors, contents.metadata);
  });
  // SHA256SUMS, as every checkpoint carries: loading checks the weights against it.
  writeFileAtomicSync(path.join(ckpt, CHECKSUMS_FILE), formatChecksums(new Map([[MODEL_FILE, sha256File(path.join(ckpt, MODEL_FILE))]])));
  const state = { ...found.state, files: { [MODEL_FILE]: fs.statSync(path.join(ckpt, MODEL_FILE)).size } };
  writeFileAtomicSync(path.join(ckpt, STATE_FILE), JSON.stringify(state, null, 2) + '\n');
  for (const extra of ['config.yaml', 'tokenizer.json']) {
    const from = path.join(found.runDir, extra);
    if (fs.existsSync(from)) fs.copyFileSync(from, path.join(out, extra));
  }
  writeFileAtomicSync(path.join(out, LATEST_FILE), `${CHECKPOINTS_DIR}/step-${step}\n`);
  const bytes = fs.statSync(path.join(ckpt, MODEL_FILE)).size;
  console.log(`packed ${found.dir} (step ${step}) -> ${out}: ${(bytes / 2 ** 20).toFixed(1)} MiB of weights${f16 ? ' (f16 matrices)' : ''}`);
}

main(process.argv.slice(2));
