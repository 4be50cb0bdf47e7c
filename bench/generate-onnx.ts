// `dalle generate --runtime engine` vs `--runtime onnx` on the bundled default model (models/default): the same
// captions, seeds and sampling options through the one sampling loop (sampler.ts sampleImageTokensAsync), with the
// engine's prior (asyncSteps) and onnxruntime's (onnxStepPrior on the cached export, as `dalle generate --runtime onnx`
// opens it), batch by batch in alternation so a shared machine's load falls on both alike. Prints how many image
// tokens agree (and where the first difference of each differing image is), image tokens/s of each (sampling loop),
// and the dVAE decode time of each.
// Run: node dist/bench/generate-onnx.js [--threads 2] [--captions 16] [--samples 2] [--batch 8] [--cond-scale 3]
//        [--top-k 0] [--top-p 1] [--seed 0]
import * as fs from 'fs';
import * as path from 'path';
import { loadDvae } from '../src/core/models/dvae/load';
import { native } from '../src/core/native';
import { onnxCacheRoot, onnxStepPrior, openOnnxGeneration } from '../src/core/onnx';
import { padCaption } from '../src/core/sample/generate';
import { loadPrior } from '../src/core/models/prior/load';
import { shardUnits, unitRng } from '../src/core/sample/plan';
import { asyncSteps, sampleImageTokensAsync } from '../src/core/sample/sampler';
import { Tensor, noGrad, tidy } from '../src/core/tensor';

const ROOT = path.join(__dirname, '..', '..');

function arg(name: string, fallback: string): string {
  const i = process.argv.indexOf(name);
  return i >= 0 ? process.argv[i + 1] : fallback;
}

async function main(): Promise<void> {
  const threads = Number(arg('--threads', '2'));
  const nCaptions = Number(arg('--captions', '16'));
  const samples = Number(arg('--samples', '2'));
  const batch = Number(arg('--batch', '8'));
  const condScale = Number(arg('--cond-scale', '3'));
  const sampling = { temperature: Number(arg('--temperature', '1')), topK: Number(arg('--top-k', '0')), topP: Number(arg('--top-p', '1')) };
  const seed = Number(arg('--seed', '0'));
  native.setThreads(threads);
  const captions = fs.readFileSync(path.join(ROOT, 'docs', 'samples-val16.txt'), 'utf8').split('\n').filter((l) => l.trim() !== '').slice(0, nCaptions);
  const prior = loadPrior(path.join(ROOT, 'models', 'default', 'prior'));
  const dvae = loadDvae(path.join(ROOT, 'models', 'default', 'dvae'));
  const onnx = await openOnnxGeneration(prior, dvae, { threads });
  const engineSteps = asyncSteps(prior.model);
  const onnxSteps = onnx.prior;
  void onnxStepPrior; // (onnx.prior is onnxStepPrior over the opened export)
  const { textLen: Tt, textVocab, gridSide } = prior.model;
  const N = gridSide * gridSide;
  const texts = captions.map((c) => padCaption(prior.tokenizer.encode(c).slice(0, Tt), Tt, textVocab));
  const units = shardUnits(captions.length, samples, { index: 0, count: 1, source: 'bench' });
  console.log(
    `models/default (prior ${prior.config.model.n_layers} layers, d ${prior.config.model.n_heads * prior.config.model.head_dim}, ${gridSide}x${gridSide} grid, vocab ${prior.model.imageVocab}), ` +
      `${captions.length} captions x ${samples} samples, batch ${batch}, cond-scale ${condScale}, temperature ${sampling.temperature}, top-k ${sampling.topK}, top-p ${sampling.topP}, seed ${seed}, ` +
      `${threads} threads, ${native.cpuInfo().isa}; onnx export: ${onnx.source} in ${onnxCacheRoot()}`,
  );
  const time = { engine: 0, onnx: 0, decodeEngine: 0, decodeOnnx: 0 };
  let same = 0;
  let total = 0;
  let imagesSame = 0;
  let pixelsMax = 0;
  const firsts: string[] = [];
  for (let start = 0; start < units.length; start += batch) {
    const group = units.slice(start, start + batch);
    const B = group.length;
    const text = new Int32Array(B * Tt);
    group.forEach((u, b) => text.set(texts[u.caption], b * Tt));
    const request = () => ({ text, rngs: group.map((u) => unitRng(seed, u)) });
    // Alternate which runtime goes first, batch by batch.
    const order = (start / batch) % 2 === 0 ? (['engine', 'onnx'] as const) : (['onnx', 'engine'] as const);
    const result: Record<string, Int32Array> = {};
    for (const which of order) {
      const t0 = performance.now();
      result[which] = (await sampleImageTokensAsync(which === 'engine' ? engineSteps : onnxSteps, request(), { sampling, condScale })).tokens;
      time[which] += performance.now() - t0;
    }
    for (let b = 0; b < B; b++) {
      let first = -1;
      for (let i = 0; i < N; i++) {
        total++;
        if (result.engine[b * N + i] === result.onnx[b * N + i]) same++;
        else if (first < 0) first = i;
      }
      if (first < 0) imagesSame++;
      else firsts.push(`c${group[b].caption}s${group[b].sample}@${first}`);
    }
    // Decoding the engine's tokens both ways.
    const t1 = performance.now();
    const engineImages = noGrad(() => tidy(() => dvae.model.decode(Tensor.from(result.engine, [B, gridSide, gridSide], 'i32')).toArray())) as Float32Array;
    const t2 = performance.now();
    const onnxImages = await onnx.decodeBatch(result.engine, B);
    const t3 = performance.now();
    time.decodeEngine += t2 - t1;
    time.decodeOnnx += t3 - t2;
    for (let i = 0; i < engineImages.length; i++) pixelsMax = Math.max(pixelsMax, Math.abs(engineImages[i] - onnxImages[i]));
    console.log(`  batch ${start / batch}: engine ${(time.engine / 1000).toFixed(1)} s, onnx ${(time.onnx / 1000).toFixed(1)} s so far`);
  }
  const tokens = units.length * N;
  const rate = (ms: number): string => `${(tokens / (ms / 1000)).toFixed(1)} image tokens/s (${(units.length / (ms / 1000)).toFixed(3)} images/s)`;
  console.log(`tokens: ${same}/${total} agree (${((100 * same) / total).toFixed(3)}%), ${imagesSame}/${units.length} images identical${firsts.length ? `; first differences (caption, sample @ position): ${firsts.join(' ')}` : ''}`);
  console.log(`sampling: engine ${rate(time.engine)}, onnx ${rate(time.onnx)}; onnx / engine time ${(time.onnx / time.engine).toFixed(2)}x`);
  console.log(`dVAE decode of ${units.length} images: engine ${(time.decodeEngine / 1000).toFixed(2)} s, onnx ${(time.decodeOnnx / 1000).toFixed(2)} s; max |pixel diff| ${pixelsMax.toExponential(2)}`);
  await onnx.release();
  prior.model.dispose();
  dvae.model.dispose();
}

main().catch((error) => {
  console.error(error);
  process.exit(1);
});
