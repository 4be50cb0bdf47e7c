// The dVAE: parameter names and shapes against a transcription of the released code (openai/DALL-E), forward shapes,
// the loss pieces against float64 hand computations, a short training run, and save / load.
// Key: B = batch, C = image channels, V = vocab_size, H, W = image side, h, w = grid side.
import * as assert from 'node:assert';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import {
  Dvae, RELEASED_ARCH, DvaeArch, abs, argmaxCodes, clamp01, dvaeLoss, dvaeParameterShapes, dvaeSchedules, gumbelSoftmax, resolveArch,
  klToUniform, gaussianNll, logitLaplaceNll, mapPixels, unmapPixels, codebookUsageGap,
} from '../../src/core/models/dvae';
import { loadTensorsInto, readSafetensorsSync, saveTensors } from '../../src/core/io';
import { native } from '../../src/core/native';
import { permute, sum } from '../../src/core/ops';
import { dvaeConfig, resolveConfig } from '../../src/core/config';
import { Philox, Tensor, backward, keep, liveStorage, noGrad, randGumbel, tidy, zeroGrad } from '../../src/core/tensor';
import { AdamW } from '../../src/core/train/adamw';
import { cosine, linear } from '../../src/core/train/schedule';
import { makeRandom } from '../harness/random';

const TINY = { n_hid: 8, n_groups: 2, n_blk_per_group: 1, vocab_size: 16 } as const;

/** Every pixel of images xs (B, C, H, W) mapped into (eps, 1 - eps), with the indices of its mu and ln b in stats (B, 2C, H, W). */
function* mappedPixels(xs: ArrayLike<number>, [B, C, H, W]: number[], eps = 0.1): Generator<{ x: number; iMu: number; iLnB: number }> {
  for (let b = 0; b < B; b++) {
    for (let c = 0; c < C; c++) {
      for (let p = 0; p < H * W; p++) {
        yield { x: (1 - 2 * eps) * xs[(b * C + c) * H * W + p] + eps, iMu: (b * 2 * C + c) * H * W + p, iLnB: (b * 2 * C + C + c) * H * W + p };
      }
    }
  }
}

/**
 * A literal transcription of dall_e/encoder.py and dall_e/decoder.py (group_count = 4): every Conv2d(n_in, n_out, kw)
 * in construction order with its state_dict name. Written independently of layout.ts, which generalises it to
 * any number of groups.
 */
function releasedShapes(nHid: number, nBlk: number, V: number, nInit: number, C: number): Array<[string, number[]]> {
  const out: Array<[string, number[]]> = [];
  const conv = (name: string, nIn: number, nOut: number, kw: number): void => {
    out.push([`${name}.w`, [nOut, nIn, kw, kw]], [`${name}.b`, [nOut]]);
  };
  const block = (name: string, nIn: number, nOut: number, kws: number[]): void => {
    const h = nOut / 4;
    if (nIn !== nOut) conv(`${name}.id_path`, nIn, nOut, 1);
    conv(`${name}.res_path.conv_1`, nIn, h, kws[0]);
    conv(`${name}.res_path.conv_2`, h, h, kws[1]);
    conv(`${name}.res_path.conv_3`, h, h, kws[2]);
    conv(`${name}.res_path.conv_4`, h, nOut, kws[3]);
  };
  const enc = [3, 3, 3, 1];
  conv('encoder.blocks.input', C, nHid, 7);
  for (let i = 0; i < nBlk; i++) block(`encoder.blocks.group_1.block_${i + 1}`, 1 * nHid, 1 * nHid, enc);
  for (let i = 0; i < nBlk; i++) block(`encoder.blocks.group_2.block_${i + 1}`, i === 0 ? 1 * nHid : 2 * nHid, 2 * nHid, enc);
  for (let i = 0; i < nBlk; i++) block(`encoder.blocks.group_3.block_${i + 1}`, i === 0 ? 2 * nHid : 4 * nHid, 4 * nHid, enc);
  for (let i = 0; i < nBlk; i++) block(`encoder.blocks.group_4.block_${i + 1}`, i === 0 ? 4 * nHid : 8 * nHid, 8 * nHid, enc);
  conv('encoder.blocks.output.conv', 8 * nHid, V, 1);
  const dec = [1, 3, 3, 3];
  conv('decoder.blocks.input', V, nInit, 1);
  for (let i = 0; i < nBlk; i++) block(`decoder.blocks.group_1.block_${i + 1}`, i === 0 ? nInit : 8 * nHid, 8 * nHid, dec);
  for (let i = 0; i < nBlk; i++) block(`decoder.blocks.group_2.block_${i + 1}`, i === 0 ? 8 * nHid : 4 * nHid, 4 * nHid, dec);
  for (let i = 0; i < nBlk; i++) block(`decoder.blocks.group_3.block_${i + 1}`, i === 0 ? 4 * nHid : 2 * nHid, 2 * nHid, dec);
  for (let i = 0; i < nBlk; i++) block(`decoder.blocks.group_4.block_${i + 1}`, i === 0 ? 2 * nHid : 1 * nHid, 1 * nHid, dec);
  conv('decoder.blocks.output.conv', 1 * nHid, 2 * C, 1);
  return out;
}

const count = (shapes: Array<[string, number[]]>, prefix: string): number =>
  shapes.filter(([n]) => n.startsWith(prefix)).reduce((s, [, sh]) => s + sh.reduce((a, b) => a * b, 1), 0);

function tmpFile(name: string): string {
  return path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'dalle-dvae-')), name);
}

function host(t: Tensor): Float64Array {
  return Float64Array.from(t.toArray());
}

function assertClose(actual: ArrayLike<number>, expected: ArrayLike<number>, tol: number, what: string): void {
  assert.strictEqual(actual.length, expected.length, `${what}: length`);
  for (let i = 0; i < actual.length; i++) {
    const err = Math.abs(actual[i] - expected[i]);
    if (!(err <= tol * (1 + Math.abs(expected[i])))) assert.fail(`${what}[${i}]: got ${actual[i]}, expected ${expected[i]}`);
  }
}

/** Overwrites a parameter's values in place (through the safetensors-free copy path used by loadTensorsInto). */
function loadInto(dst: Tensor, src: Tensor): void {
  native.cast(dst.address, dst.dtype, src.address, src.dtype, dst.size);
}

function paramShapes(m: Dvae): Array<[string, number[]]> {
  return m.namedParameters().map(([n, t]) => [n, [...t.shape]]);
}

/** 8 synthetic 8x8 RGB images: four solid colours and four images split into two colours (left / right). */
function syntheticImages(): Float32Array {
  const cols = [[1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 1, 0], [0, 1, 1], [1, 0, 1], [0.5, 0.5, 0.5], [0, 0, 0]];
  const data = new Float32Array(8 * 3 * 64);
  for (let n = 0; n < 8; n++) {
    for (let c = 0; c < 3; c++) {
      for (let y = 0; y < 8; y++) {
        for (let x = 0; x < 8; x++) {
          const a = cols[n][c];
          const b = cols[(n + 3) % 8][c];
          data[((n * 3 + c) * 8 + y) * 8 + x] = n < 4 || x < 4 ? a : b;
        }
      }
    }
  }
  return data;
}

describe('dVAE', () => {
  describe('architecture (released openai/DALL-E)', () => {
    it('paper config: names and shapes equal the released code, 53.8M + 43.8M parameters', () => {
      const ours = dvaeParameterShapes(RELEASED_ARCH);
      const released = releasedShapes(256, 2, 8192, 128, 3);
      assert.deepStrictEqual(ours, released);
      assert.strictEqual(ours.length, 150); // 75 convs
      assert.strictEqual(count(ours, 'encoder.'), 53_786_240);
      assert.strictEqual(count(ours, 'decoder.'), 43_829_766);
      const names = new Map(ours);
      assert.deepStrictEqual(names.get('encoder.blocks.input.w'), [256, 3, 7, 7]);
      assert.deepStrictEqual(names.get('encoder.blocks.output.conv.w'), [8192, 2048, 1, 1]);
      assert.deepStrictEqual(names.get('decoder.blocks.input.w'), [128, 8192, 1, 1]);
      assert.deepStrictEqual(names.get('decoder.blocks.output.conv.b'), [6]);
      assert.ok(!names.has('encoder.blocks.group_1.block_1.id_path.w')); // same width: nn.Identity
      assert.deepStrictEqual(names.get('encoder.blocks.group_2.block_1.id_path.w'), [512, 256, 1, 1]);
      assert.deepStrictEqual(names.get('decoder.blocks.group_1.block_1.id_path.w'), [2048, 128, 1, 1]);
      assert.deepStrictEqual(names.get('decoder.blocks.group_1.block_1.res_path.conv_4.w'), [2048, 512, 3, 3]);
    });

    it('the constructed model has exactly the layout (4 groups, 2 blocks, small widths)', () => {
      const m = new Dvae({ n_hid: 16, vocab_size: 64, n_init: 8 });
      try {
        assert.deepStrictEqual(paramShapes(m), releasedShapes(16, 2, 64, 8, 3));
        assert.deepStrictEqual(paramShapes(m), dvaeParameterShapes(m.arch));
        assert.strictEqual(m.downsampleFactor, 8);
      } finally {
        m.dispose();
      }
    });

    it('initialises like the released Conv2d: N(0, 1/(n_in k^2)) weights, zero biases', () => {
      const m = new Dvae({ n_hid: 64, n_groups: 1, n_blk_per_group: 1, vocab_size: 512 }, { seed: 3 });
      try {
        for (const [name, t] of m.namedParameters()) {
          const v = host(t);
          if (name.endsWith('.b')) {
            assert.ok(v.every((x) => x === 0), name);
            continue;
          }
          if (v.length < 4000) continue;
          const [, nIn, k] = t.shape;
          let s2 = 0;
          for (const x of v) s2 += x * x;
          const std = Math.sqrt(s2 / v.length);
          const want = 1 / Math.sqrt(nIn * k * k);
          assert.ok(Math.abs(std / want - 1) < 0.1, `${name}: std ${std}, want ${want}`);
        }
      } finally {
        m.dispose();
      }
    });

    it('rejects widths the resblocks cannot split in four', () => {
      assert.throws(() => new Dvae({ ...TINY, n_hid: 6 }), /n_hid must be a multiple of 4/);
    });
  });

  describe('forward (tiny: n_hid 8, 2 groups, 1 block, vocab 16)', () => {
    let m: Dvae;
    before(() => {
      m = new Dvae(TINY, { seed: 1 });
    });
    after(() => m.dispose());

    it('encoder (B, 3, 8, 8) -> logits (B, 16, 4, 4); decoder -> (B, 6, 8, 8); encode / decode', () => {
      tidy(() => {
        const x = Tensor.from(Float32Array.from({ length: 2 * 3 * 64 }, (_, i) => (i * 37 % 101) / 100), [2, 3, 8, 8]);
        const logits = m.logits(x);
        assert.deepStrictEqual(logits.shape, [2, 16, 4, 4]);
        const stats = m.decoder.forward(permute(Tensor.from(new Float32Array(2 * 16 * 16).fill(1 / 16), [2, 4, 4, 16]), [0, 3, 1, 2]));
        assert.deepStrictEqual(stats.shape, [2, 6, 8, 8]);
        const codes = m.encode(x);
        assert.strictEqual(codes.dtype, 'i32');
        assert.deepStrictEqual(codes.shape, [2, 4, 4]);
        // encode is the argmax of the logits.
        const l = host(logits);
        const c = codes.toArray();
        for (let p = 0; p < 16; p++) {
          let best = 0;
          for (let v = 1; v < 16; v++) if (l[v * 16 + p] > l[best * 16 + p]) best = v;
          assert.strictEqual(c[p], best);
        }
        const img = m.decode(codes);
        assert.deepStrictEqual(img.shape, [2, 3, 8, 8]);
        assert.ok(host(img).every((v) => v >= 0 && v <= 1));
        assert.deepStrictEqual(m.reconstruct(x).shape, [2, 3, 8, 8]);
      });
    });

    it('decode(codes) (embedding lookup) equals the decoder on one-hot codes', () => {
      tidy(() => {
        const codes = Tensor.from([0, 3, 15, 7, 7, 1, 2, 9, 11, 4, 4, 4, 5, 6, 12, 13], [1, 4, 4], 'i32');
        const oneHot = new Float32Array(16 * 16);
        codes.toArray().forEach((v, p) => (oneHot[v * 16 + p] = 1)); // (1, V, 4, 4)
        const ref = noGrad(() => m.statsToImages(m.decoder.forward(Tensor.from(oneHot, [1, 16, 4, 4]))));
        assertClose(host(m.decode(codes)), host(ref), 1e-5, 'decode');
        assert.throws(() => m.decode(Tensor.from([16], [1, 1, 1], 'i32')), /outside \[0, 16\)/);
      });
    });

    it('the grid side is the image side / 2^(n_groups - 1)', () => {
      tidy(() => {
        const m3 = new Dvae({ ...TINY, n_groups: 3 });
        try {
          assert.deepStrictEqual(m3.logits(Tensor.zeros([1, 3, 16, 8])).shape, [1, 16, 4, 2]);
          assert.deepStrictEqual(m3.decode(Tensor.zeros([1, 4, 2], 'i32')).shape, [1, 3, 16, 8]);
          assert.throws(() => m3.logits(Tensor.zeros([1, 3, 6, 8])), /multiples of 4/);
        } finally {
          m3.dispose();
        }
      });
    });
  });

  describe('loss pieces against float64', () => {
    const eps = 0.1;
    const rand = makeRandom(11);

    it('pixel map, its inverse with clamping, abs, clamp', () => {
      tidy(() => {
        const xs = [0, 0.25, 0.5, 1, -0.3, 1.7, 0.05, 0.95];
        const x = Tensor.from(xs, [1, 1, 2, 4]);
        assertClose(host(mapPixels(x)), xs.map((v) => (1 - 2 * eps) * v + eps), 1e-6, 'map');
        assertClose(host(unmapPixels(x)), xs.map((v) => Math.min(1, Math.max(0, (v - eps) / (1 - 2 * eps)))), 1e-6, 'unmap');
        assertClose(host(unmapPixels(mapPixels(Tensor.from(xs.slice(0, 4), [1, 1, 1, 4])))), xs.slice(0, 4), 1e-6, 'roundtrip');
        assertClose(host(abs(x)), xs.map(Math.abs), 1e-7, 'abs');
        assertClose(host(clamp01(x)), xs.map((v) => Math.min(1, Math.max(0, v))), 1e-7, 'clamp');
      });
    });

    it('logit-Laplace NLL and its gradients', () => {
      tidy(() => {
        const [B, C, H, W] = [2, 3, 2, 2];
        const n = B * C * H * W;
        const xs = Array.from({ length: n }, () => rand.uniform());
        const st = Array.from({ length: 2 * n }, () => rand.normal());
        const xm = mapPixels(Tensor.from(xs, [B, C, H, W]));
        const stats = Tensor.from(st, [B, 2 * C, H, W]);
        stats.requiresGrad = true;
        const nll = logitLaplaceNll(xm, stats);
        const want: number[] = [];
        const dStats = new Float64Array(2 * n);
        for (const { x, iMu, iLnB } of mappedPixels(xs, [B, C, H, W], eps)) {
          const mu = st[iMu];
          const bScale = Math.exp(st[iLnB]);
          const d = Math.log(x / (1 - x)) - mu;
          // -ln [1 / (2 b x (1 - x)) exp(-|logit(x) - mu| / b)]
          want.push(Math.log(2 * bScale * x * (1 - x)) + Math.abs(d) / bScale);
          dStats[iMu] = -Math.sign(d) / bScale;
          dStats[iLnB] = 1 - Math.abs(d) / bScale;
        }
        assertClose(host(nll), want, 1e-5, 'nll');
        backward(sum(nll));
        assertClose(host(stats.grad!), dStats, 1e-5, 'dnll/dstats');
        stats.grad!.dispose();
      });
    });

    it('Gaussian NLL around sigmoid(mu) and its gradients (ln b gets none)', () => {
      tidy(() => {
        const [B, C, H, W] = [2, 3, 3, 1];
        const n = B * C * H * W;
        const sigma = 0.07;
        const xs = Array.from({ length: n }, () => rand.uniform());
        const st = Array.from({ length: 2 * n }, () => 2 * rand.normal());
        const xm = mapPixels(Tensor.from(xs, [B, C, H, W]));
        const stats = Tensor.from(st, [B, 2 * C, H, W]);
        stats.requiresGrad = true;
        const nll = gaussianNll(xm, stats, sigma);
        const want: number[] = [];
        const dStats = new Float64Array(2 * n);
        for (const { x, iMu } of mappedPixels(xs, [B, C, H, W], eps)) {
          const s = 1 / (1 + Math.exp(-st[iMu]));
          // -ln [1 / (sigma sqrt(2 pi)) exp(-(s - x)^2 / (2 sigma^2))]
          want.push((s - x) ** 2 / (2 * sigma * sigma) + Math.log(sigma * Math.sqrt(2 * Math.PI)));
          dStats[iMu] = ((s - x) / (sigma * sigma)) * s * (1 - s);
        }
        assertClose(host(nll), want, 1e-4, 'nll');
        backward(sum(nll));
        assertClose(host(stats.grad!), dStats, 1e-4, 'dnll/dstats');
        stats.grad!.dispose();
        assert.throws(() => gaussianNll(xm, stats, 0), /sigma must be > 0/);
        assert.throws(() => gaussianNll(xm, Tensor.from(st.slice(0, n), [B, C, H, W]), sigma), /must be \(2, 6, 3, 1\)/);
      });
    });

    it('gumbel-softmax over the codebook, KL to uniform, argmax codes', () => {
      tidy(() => {
        const [B, V, h, w] = [2, 5, 2, 3];
        const ls = Array.from({ length: B * V * h * w }, () => 2 * rand.normal());
        const logits = Tensor.from(ls, [B, V, h, w]);
        const tau = 0.5;
        const rng = new Philox(5, 123);
        const g = host(randGumbel(rng.clone(), [B, h, w, V])); // the noise gumbelSoftmax will draw, (B, h, w, V)
        const z = host(gumbelSoftmax(logits, tau, rng));
        const kl = host(klToUniform(logits));
        const codes = argmaxCodes(logits).toArray();
        for (let b = 0; b < B; b++) {
          for (let p = 0; p < h * w; p++) {
            const l = Array.from({ length: V }, (_, v) => ls[(b * V + v) * h * w + p]);
            const y = l.map((lv, v) => (lv + g[(b * h * w + p) * V + v]) / tau);
            const my = Math.max(...y);
            const ey = y.map((v) => Math.exp(v - my));
            const sy = ey.reduce((a, c) => a + c, 0);
            for (let v = 0; v < V; v++) assertClose([z[(b * V + v) * h * w + p]], [ey[v] / sy], 1e-5, `z b${b} p${p} v${v}`);
            const ml = Math.max(...l);
            const lse = ml + Math.log(l.reduce((a, c) => a + Math.exp(c - ml), 0));
            const klWant = l.reduce((a, c) => a + Math.exp(c - lse) * (c - lse), 0) + Math.log(V);
            assertClose([kl[b * h * w + p]], [klWant], 1e-5, `kl b${b} p${p}`);
            assert.strictEqual(codes[b * h * w + p], l.indexOf(ml));
          }
        }
        assert.throws(() => gumbelSoftmax(logits, 0, rng), /temperature must be > 0/);
        // A uniform posterior has KL 0; a one-hot one has KL ln V.
        assertClose(host(klToUniform(Tensor.zeros([1, V, 1, 1]))), [0], 1e-6, 'kl uniform');
        assertClose(host(klToUniform(Tensor.from([100, 0, 0, 0, 0], [1, V, 1, 1]))), [Math.log(V)], 1e-5, 'kl one-hot');
      });
    });

    it('codebook usage gap: 0 when the cells spread evenly over the codes, ln V when they all pick one', () => {
      tidy(() => {
        const V = 4;
        // Four sharp cells (B 1, 2x2 grid), each on a different code: the batch mean is uniform although every cell is one-hot.
        const spread = new Float32Array(V * 4);
        for (let c = 0; c < 4; c++) spread[c * 4 + c] = 60; // (1, V, 2, 2): code c is high at cell c
        assertClose(host(codebookUsageGap(Tensor.from(spread, [1, V, 2, 2]))), [0], 1e-5, 'even usage');
        const same = new Float32Array(V * 4);
        for (let cell = 0; cell < 4; cell++) same[0 * 4 + cell] = 60; // code 0 everywhere
        assertClose(host(codebookUsageGap(Tensor.from(same, [1, V, 2, 2]))), [Math.log(V)], 1e-5, 'one code');
        // Against a float64 computation on random logits: ln V + sum_v qbar_v ln qbar_v.
        const logits = Array.from({ length: 2 * V * 3 * 3 }, () => 3 * rand.normal());
        const qbar = new Float64Array(V);
        for (let b = 0; b < 2; b++) {
          for (let p = 0; p < 9; p++) {
            const l = Array.from({ length: V }, (_, v) => logits[b * V * 9 + v * 9 + p]);
            const m = Math.max(...l);
            const e = l.map((x) => Math.exp(x - m));
            const z = e.reduce((a, c) => a + c, 0);
            e.forEach((x, v) => (qbar[v] += x / z / 18));
          }
        }
        const expected = Math.log(V) + Array.from(qbar).reduce((a, q) => a + q * Math.log(q), 0);
        assertClose(host(codebookUsageGap(Tensor.from(logits, [2, V, 3, 3]))), [expected], 1e-5, 'random');
      });
    });

    it('dvaeLoss = mean over images of summed NLL + beta * summed KL', () => {
      const m = new Dvae(TINY, { seed: 2 });
      try {
        tidy(() => {
          const [B, C, H, W] = [2, 3, 8, 8];
          const xs = Array.from({ length: B * C * H * W }, () => rand.uniform());
          const x = Tensor.from(xs, [B, C, H, W]);
          const beta = 0.7;
          const tau = 0.9;
          const rng = new Philox(9);
          const ref = noGrad(() => {
            const logits = m.logits(x);
            const stats = m.decoder.forward(gumbelSoftmax(logits, tau, rng.clone()));
            return { logits: host(logits), stats: host(stats) };
          });
          const r = dvaeLoss(m, x, { tau, beta, rng });
          let recon = 0;
          for (const { x: xv, iMu, iLnB } of mappedPixels(xs, [B, C, H, W], eps)) {
            const mu = ref.stats[iMu];
            const lnB = ref.stats[iLnB];
            recon += Math.log(2 * xv * (1 - xv)) + lnB + Math.abs(Math.log(xv / (1 - xv)) - mu) / Math.exp(lnB);
          }
          recon /= B;
          const V = 16;
          let kl = 0;
          for (let b = 0; b < B; b++) {
            for (let p = 0; p < 16; p++) {
              const l = Array.from({ length: V }, (_, v) => ref.logits[(b * V + v) * 16 + p]);
              const ml = Math.max(...l);
              const lse = ml + Math.log(l.reduce((a, c) => a + Math.exp(c - ml), 0));
              kl += l.reduce((a, c) => a + Math.exp(c - lse) * (c - lse), 0) + Math.log(V);
            }
          }
          kl /= B;
          assertClose([r.recon.item()], [recon], 1e-4, 'recon');
          assertClose([r.kl.item()], [kl], 1e-4, 'kl');
          assertClose([r.loss.item()], [recon + beta * kl], 1e-4, 'loss');
          assertClose([r.reconPerDim.item()], [recon / (C * H * W)], 1e-4, 'recon per dim');
          assertClose([r.klPerCell.item()], [kl / 16], 1e-4, 'kl per cell');
          backward(r.loss);
          for (const [name, p] of m.namedParameters()) assert.ok(p.grad, `no gradient for ${name}`);
          zeroGrad(m.parameters());
        });
      } finally {
        m.dispose();
      }
    });

    it('dvaeLoss with recon_loss gaussian: the summed Gaussian NLL per image', () => {
      const m = new Dvae(TINY, { seed: 4 });
      try {
        tidy(() => {
          const [B, C, H, W] = [2, 3, 8, 8];
          const xs = Array.from({ length: B * C * H * W }, () => rand.uniform());
          const x = Tensor.from(xs, [B, C, H, W]);
          const rng = new Philox(21);
          const sigma = 0.05;
          const stats = noGrad(() => host(m.decoder.forward(gumbelSoftmax(m.logits(x), 0.8, rng.clone()))));
          const r = dvaeLoss(m, x, { tau: 0.8, beta: 0, rng, reconLoss: 'gaussian', reconSigma: sigma });
          let recon = 0;
          for (const { x: xv, iMu } of mappedPixels(xs, [B, C, H, W], eps)) {
            const s = 1 / (1 + Math.exp(-stats[iMu]));
            recon += (s - xv) ** 2 / (2 * sigma * sigma) + Math.log(sigma * Math.sqrt(2 * Math.PI));
          }
          assertClose([r.recon.item()], [recon / B], 1e-4, 'recon');
          assertClose([r.loss.item()], [recon / B], 1e-4, 'loss (beta 0, no usage term)');
          assert.throws(() => dvaeLoss(m, x, { tau: 0.8, beta: 0, rng, reconLoss: 'gaussian' }), /needs reconSigma/);
        });
      } finally {
        m.dispose();
      }
    });
  });

  it('trains: 60 AdamW steps on synthetic images lower the loss and the reconstruction error', function () {
    this.timeout(120_000);
    // n_hid 16 (twice TINY): n_hid 8 learns too, but slowly.
    const m = new Dvae({ ...TINY, n_hid: 16 }, { seed: 1 });
    const data = syntheticImages();
    const x = keep(Tensor.from(data, [8, 3, 8, 8]));
    const opt = new AdamW([{ params: m.namedParameters().map(([name, tensor]) => ({ name, tensor })) }],
      { lr: 1e-2, beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 1e-4 });
    const mse = (): number => tidy(() => {
      const r = m.reconstruct(x).toArray();
      let s = 0;
      for (let i = 0; i < r.length; i++) s += (r[i] - data[i]) ** 2;
      return s / r.length;
    });
    try {
      const steps = 60;
      const beta = linear(0, 1, steps / 2); // the paper's ramps, scaled down
      const tau = cosine(1, 1 / 4, steps);
      const rng = new Philox(7);
      const mse0 = mse();
      const losses: number[] = [];
      const started = Date.now();
      for (let s = 0; s < steps; s++) {
        tidy(() => {
          zeroGrad(opt.parameters);
          const r = dvaeLoss(m, x, { tau: tau(s), beta: beta(s), rng });
          backward(r.loss);
          opt.update();
          losses.push(r.recon.item() / (3 * 64));
        });
      }
      const ms = Date.now() - started;
      const mse1 = mse();
      const first = losses.slice(0, 10).reduce((a, b) => a + b) / 10;
      const last = losses.slice(-10).reduce((a, b) => a + b) / 10;
      console.log(`      recon nats/dim ${first.toFixed(3)} -> ${last.toFixed(3)}; argmax-reconstruction MSE ${mse0.toFixed(4)} -> ${mse1.toFixed(4)}; ${steps} steps in ${ms} ms`);
      assert.ok(last < first - 1, `recon per dim ${first} -> ${last}`);
      assert.ok(mse1 < 0.7 * mse0, `reconstruction MSE ${mse0} -> ${mse1}`);
    } finally {
      opt.dispose();
      x.dispose();
      m.dispose();
    }
  });

  describe('golden: a float64 NumPy transcription of the released code (test/models/dvae_reference.py)', () => {
    const script = path.resolve(__dirname, '../../../test/models/dvae_reference.py');
    const hasNumpy = spawnSync('python3', ['-c', 'import numpy'], { stdio: 'ignore' }).status === 0;

    it('encoder logits and decoder stats agree (4 groups, 2 blocks, n_hid 8, vocab 32, 16x16)', function () {
      if (!hasNumpy) this.skip(); // python3 + numpy are optional: the check runs where they are installed
      this.timeout(60_000);
      const m = new Dvae({ n_hid: 8, n_groups: 4, n_blk_per_group: 2, vocab_size: 32, n_init: 16 }, { seed: 4 });
      try {
        tidy(() => {
          const rand = makeRandom(21);
          const xs = Float32Array.from({ length: 2 * 3 * 16 * 16 }, () => rand.uniform());
          const x = mapPixels(Tensor.from(xs, [2, 3, 16, 16])); // (B, C, H, W)
          const z = gumbelSoftmax(Tensor.from(Float32Array.from({ length: 2 * 32 * 4 }, () => rand.normal()), [2, 32, 2, 2]), 1, new Philox(1)); // (B, V, h, w)
          const inFile = tmpFile('in.safetensors');
          const outFile = inFile.replace('in.safetensors', 'out.safetensors');
          saveTensors(inFile, [...m.namedParameters(), ['x', x], ['z', z]]);
          const r = spawnSync('python3', [script, inFile, outFile], { encoding: 'utf8' });
          assert.strictEqual(r.status, 0, r.stderr);
          const ref = readSafetensorsSync(outFile).tensors;
          const check = (got: Tensor, name: string): void => {
            const want = ref.get(name)!;
            assert.deepStrictEqual([...got.shape], want.shape, `${name} shape`);
            const w = want.data as Float64Array;
            const scale = w.reduce((a, v) => Math.max(a, Math.abs(v)), 0);
            assertClose(host(got), w, 1e-4 * (1 + scale), name);
          };
          noGrad(() => {
            check(m.encoder.forward(x), 'logits');
            check(m.decoder.forward(z), 'stats');
          });
        });
      } finally {
        m.dispose();
      }
    });
  });

  describe('config and schedules', () => {
    it('builds from a resolved dvae config (or its model section)', () => {
      const config = resolveConfig(dvaeConfig, { sets: ['model.n_hid=8', 'model.n_groups=2', 'model.n_blk_per_group=1', 'model.vocab_size=16', 'model.n_init=4'] });
      const a = new Dvae(config);
      const b = new Dvae(config.model);
      try {
        assert.deepStrictEqual(a.arch, { ...TINY, input_channels: 3, n_init: 4 });
        assert.deepStrictEqual(paramShapes(a), paramShapes(b));
        assert.strictEqual(a.eps, 0.1);
        assert.deepStrictEqual(new Map(paramShapes(a)).get('decoder.blocks.input.w'), [4, 16, 1, 1]);
      } finally {
        a.dispose();
        b.dispose();
      }
      // Missing keys take the released model's values.
      assert.deepStrictEqual(resolveArch({ n_hid: 4 }), { ...RELEASED_ARCH, n_hid: 4, logit_laplace_eps: 0.1 });
    });

    it("the paper's ramps: beta 0 -> 6.6 over 5k, tau 1 -> 1/16 (cosine) over 150k, lr 1e-4 -> 1.25e-6 over 1.2M", () => {
      const s = dvaeSchedules(resolveConfig(dvaeConfig));
      assert.strictEqual(s.beta(0), 0);
      assert.ok(Math.abs(s.beta(2500) - 3.3) < 1e-12);
      assert.strictEqual(s.beta(5000), 6.6);
      assert.strictEqual(s.beta(1e6), 6.6);
      assert.strictEqual(s.tau(0), 1);
      assert.ok(Math.abs(s.tau(75_000) - (1 + 1 / 16) / 2) < 1e-12);
      assert.strictEqual(s.tau(150_000), 1 / 16);
      assert.strictEqual(s.lr(0), 1e-4);
      assert.strictEqual(s.lr(1_200_000), 1.25e-6);
      assert.strictEqual(s.lr(3_000_000), 1.25e-6);
    });
  });

  describe('training step', () => {
    for (const reconLoss of ['logit_laplace', 'gaussian'] as const) {
    it(`gradients of dvaeLoss (${reconLoss}) match finite differences (float64 sums of a float32 model)`, () => {
      const m = new Dvae(TINY, { seed: 5 });
      try {
        const rand = makeRandom(3);
        const x = keep(Tensor.from(Float32Array.from({ length: 2 * 3 * 64 }, () => rand.uniform()), [2, 3, 8, 8]));
        const rng = new Philox(17);
        const opts = { tau: 0.7, beta: 0.5, reconLoss, reconSigma: 0.2 };
        const lossAt = (): number => tidy(() => noGrad(() => dvaeLoss(m, x, { ...opts, rng: rng.clone() }).loss.item()));
        tidy(() => backward(dvaeLoss(m, x, { ...opts, rng: rng.clone() }).loss));
        const picks: Array<[string, number]> = [
          ['encoder.blocks.input.w', 5], ['encoder.blocks.group_2.block_1.id_path.w', 3],
          ['encoder.blocks.output.conv.b', 2], ['decoder.blocks.input.w', 7], ['decoder.blocks.output.conv.w', 1],
          ['decoder.blocks.output.conv.b', 4], ['decoder.blocks.group_1.block_1.res_path.conv_4.w', 9],
        ];
        const params = new Map(m.namedParameters());
        for (const [name, i] of picks) {
          const p = params.get(name)!;
          const g = p.grad!.toArray()[i];
          const v = p.toArray() as Float32Array;
          const h = 1e-2 * Math.max(1e-2, Math.abs(v[i]));
          const orig = v[i];
          const set = (val: number): void => {
            v[i] = val;
            const t = Tensor.from(v, p.shape);
            noGrad(() => loadInto(p, t));
            t.dispose();
          };
          set(orig + h);
          const up = lossAt();
          set(orig - h);
          const down = lossAt();
          set(orig);
          const fd = (up - down) / (2 * h);
          assert.ok(Math.abs(fd - g) <= 0.05 * Math.abs(g) + 2e-3, `${name}[${i}]: backward ${g}, finite difference ${fd}`);
        }
        zeroGrad(m.parameters());
        x.dispose();
      } finally {
        m.dispose();
      }
    });
    }

    it('a step inside tidy() leaves no tensors behind', () => {
      const m = new Dvae(TINY, { seed: 6 });
      const opt = new AdamW([{ params: m.namedParameters().map(([name, tensor]) => ({ name, tensor })) }],
        { lr: 1e-3, beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 1e-4 });
      const x = keep(Tensor.from(new Float32Array(2 * 3 * 64).fill(0.3), [2, 3, 8, 8]));
      const rng = new Philox(1);
      const step = (): void => tidy(() => {
        zeroGrad(opt.parameters);
        backward(dvaeLoss(m, x, { tau: 1, beta: 1, rng }).loss);
        opt.update();
        m.encode(x);
        m.reconstruct(x);
      });
      try {
        step(); // the first step creates the gradients and moments
        const live = liveStorage().count;
        for (let i = 0; i < 3; i++) step();
        assert.strictEqual(liveStorage().count, live);
      } finally {
        opt.dispose();
        x.dispose();
        m.dispose();
      }
    });
  });

  describe('save / load', () => {
    it('a saved model loads into a fresh one with identical outputs', () => {
      const a = new Dvae(TINY, { seed: 1 });
      const b = new Dvae(TINY, { seed: 2 });
      try {
        tidy(() => {
          const file = tmpFile('dvae.safetensors');
          saveTensors(file, a.namedParameters());
          const x = Tensor.from(Float32Array.from({ length: 3 * 64 }, (_, i) => (i % 7) / 6), [1, 3, 8, 8]);
          assert.notDeepStrictEqual(host(noGrad(() => b.logits(x))), host(noGrad(() => a.logits(x))));
          loadTensorsInto(file, new Map(b.namedParameters()));
          assert.deepStrictEqual(host(noGrad(() => b.logits(x))), host(noGrad(() => a.logits(x))));
          const codes = a.encode(x);
          assert.deepStrictEqual(b.encode(x).toArray(), codes.toArray());
          assert.deepStrictEqual(host(b.decode(codes)), host(a.decode(codes)));
        });
      } finally {
        a.dispose();
        b.dispose();
      }
    });

    it('a file with a missing or misshaped tensor fails, naming them', () => {
      const a = new Dvae(TINY, { seed: 1 });
      try {
        tidy(() => {
          const file = tmpFile('bad.safetensors');
          const params = a.namedParameters().filter(([n]) => n !== 'decoder.blocks.output.conv.b');
          const wrong = 'encoder.blocks.input.w';
          saveTensors(file, params.map(([n, t]): [string, Tensor] => [n, n === wrong ? Tensor.zeros([8, 3, 5, 5]) : t]));
          const fresh = new Dvae(TINY, { seed: 3 });
          try {
            const before = host(fresh.encoder.input.w);
            assert.throws(() => loadTensorsInto(file, new Map(fresh.namedParameters())), (err: Error) =>
              /missing 'decoder\.blocks\.output\.conv\.b'/.test(err.message) &&
              /'encoder\.blocks\.input\.w' is \(8, 3, 5, 5\) in the file, \(8, 3, 7, 7\) in the model/.test(err.message));
            assert.deepStrictEqual(host(fresh.encoder.input.w), before); // nothing was copied
          } finally {
            fresh.dispose();
          }
        });
      } finally {
        a.dispose();
      }
    });
  });
});

// Keep the arch type in the public surface checked by the compiler.
const _arch: DvaeArch = RELEASED_ARCH;
void _arch;
