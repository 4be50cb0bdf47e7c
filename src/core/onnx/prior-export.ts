/**
 * The transformer prior as one ONNX graph with a key/value cache (opset 17, f32 weights as initializers), op for op
 * what src/core/models/prior computes in prefill and step:
 *
 *   prior.onnx   input_ids i32 (B, T)                 T new positions; text ids as is ([0, Vt + L): BPE tokens and the
 *                                                     per-position pad tokens), image ids offset by Vt + L
 *                past_key_i, past_value_i f32 (B, H, P, D) for each layer i: the cache of the P earlier positions
 *                                                     (P = 0 for a prefill)
 *             -> logits f32 (B, Vi)                   image logits of the token after the last new position
 *                present_key_i, present_value_i f32 (B, H, P + T, D)   the cache to pass back in
 *   prior.json   the architecture, the id offset, the checkpoint, the digest of the weights (nn/weights-digest.ts)
 *
 * Positions are P .. P + T - 1 (P read from past_key_0's shape); their embeddings come from one (L + N, C) table
 * (text_position for text, image_row + image_col for image positions). Each layer attends with rows P .. P + T - 1
 * of its (L + N, L + N) boolean mask (row, column or conv: masks.ts), stored as a constant; masked scores are -inf.
 * gelu is the tanh form the engine uses; LayerNormalization has the engine's eps.
 * Key: B = batch, T = new positions, P = cached positions, L = text_len, N = image_grid^2, C = d_model, H = heads,
 * D = head_dim, Vt = text_vocab, Vi = image_vocab.
 */
import * as path from 'node:path';
import { writeFileAtomicSync } from '../io/atomic';
import { makeOutputFolder } from '../io/preflight';
import { MaskKind, Prior, PriorArch, denseMask } from '../models/prior';
import { weightsDigest } from '../nn/weights-digest';
import { GraphBuilder, ONNX_OPSET } from './graph';
import { f32, layerNormNode, linearNode } from './layers';
import { OnnxModelError } from './errors';
import { ModelProto, encodeModel } from './proto';
import { MAX_ONNX_FILE_BYTES } from './runtime';

export const PRIOR_FILE = 'prior.onnx';
export const PRIOR_EXPORT_INFO_FILE = 'prior.json';
export const PRIOR_EXPORT_FORMAT = 'dalle-prior-onnx-1';

export interface PriorExportInfo {
  readonly format: typeof PRIOR_EXPORT_FORMAT;
  readonly opset: number;
  readonly arch: PriorArch;
  /** Image token t is fed as input id imageIdOffset + t (= text_vocab + text_len). */
  readonly imageIdOffset: number;
  readonly layerKinds: MaskKind[];
  readonly checkpoint: string;
  readonly step: number;
  /** weightsDigest of the model exported (absent in exports of older versions, which cannot be checked). */
  readonly weightsSha256?: string;
  readonly file: string;
}

export interface PriorExportSource {
  readonly model: Prior;
  /** The `model` section of the prior's config (conv_kernel is read from it). */
  readonly arch: PriorArch;
  readonly checkpoint: string;
  readonly step: number;
  /** weightsDigest(model.namedParameters()) when the caller has it already (it is computed otherwise). */
  readonly weightsSha256?: string;
}




/** 0.5 x (1 + tanh(sqrt(2 / pi) (x + 0.044715 x^3))), the engine's gelu. */
function gelu(g: GraphBuilder, x: string, k: { half: string; one: string; c: string; a: string }): string {
  const x3 = g.node('Mul', [g.node('Mul', [x, x]), x]);
  const inner = g.node('Mul', [g.node('Add', [x, g.node('Mul', [x3, k.a])]), k.c]);
  return g.node('Mul', [g.node('Mul', [x, k.half]), g.node('Add', [g.node('Tanh', [inner]), k.one])]);
}

/** The prior's graph with past / present keys and values (see the module comment). */
export function buildPriorModel(src: PriorExportSource): ModelProto {
  const { model } = src;
  const arch = src.arch;
  const { nLayers: NL, nHeads: H, headDim: D, dModel: C, textLen: L, textVocab: Vt, imageVocab: Vi, gridSide: G } = model;
  const S = L + G * G;
  const params = model.parameterCount();
  if (4 * params > MAX_ONNX_FILE_BYTES) {
    throw new OnnxModelError(
      `the prior has ${params} parameters (${((4 * params) / 2 ** 30).toFixed(1)} GiB as f32), over protobuf's 2 GiB limit for an .onnx file with its weights inside`,
      'external weight files are not supported; export a smaller prior',
    );
  }
  const g = new GraphBuilder('dalle_prior');
  const ids = g.input('input_ids', 'INT32', ['B', 'T']);
  const past: Array<[string, string]> = [];
  for (let i = 0; i < NL; i++) {
    past.push([g.input(`past_key_${i}`, 'FLOAT', ['B', H, 'P', D]), g.input(`past_value_${i}`, 'FLOAT', ['B', H, 'P', D])]);
  }
  // Positions P .. P + T - 1.
  const axis0 = g.int64s('axes0', [0]);
  const P1 = g.node('Shape', [past[0][0]], { start: { int: 2 }, end: { int: 3 } }); // (1) int64
  const T1 = g.node('Shape', [ids], { start: { int: 1 }, end: { int: 2 } });
  const PT1 = g.node('Add', [P1, T1]);
  const positions = g.node('Range', [g.node('Squeeze', [P1, axis0]), g.node('Squeeze', [PT1, axis0]), g.constant('one_i64', BigInt64Array.of(1n), [])]); // (T)
  // Embeddings: one table of text then image tokens, one of the L + N positions.
  const tokTable = new Float32Array((Vt + L + Vi) * C);
  tokTable.set(f32(model.textEmbedding.weight), 0);
  tokTable.set(f32(model.imageEmbedding.weight), (Vt + L) * C);
  const posTable = new Float32Array(S * C);
  posTable.set(f32(model.textPosition), 0);
  const rowW = f32(model.imageRow.weight);
  const colW = f32(model.imageCol.weight);
  for (let p = 0; p < G * G; p++) {
    const r = Math.floor(p / G);
    const c = p % G;
    for (let j = 0; j < C; j++) posTable[(L + p) * C + j] = Math.fround(rowW[r * C + j] + colW[c * C + j]);
  }
  let h = g.node('Add', [
    g.node('Gather', [g.constant('token_table', tokTable, [Vt + L + Vi, C]), ids], { axis: { int: 0 } }), // (B, T, C)
    g.node('Gather', [g.constant('position_table', posTable, [S, C]), positions], { axis: { int: 0 } }), // (T, C)
  ]);
  // The (S, S) masks, and the rows and columns this call needs: (T, P + T).
  const maskConst = new Map<MaskKind, string>();
  const maskRows = new Map<MaskKind, string>();
  const starts = g.node('Concat', [P1, g.int64s('zero1', [0])], { axis: { int: 0 } });
  const ends = g.node('Concat', [PT1, PT1], { axis: { int: 0 } });
  const axes01 = g.int64s('axes01', [0, 1]);
  for (const kind of new Set(model.layerKinds)) {
    const dense = denseMask({ kind, textLen: L, gridSide: G, convKernel: arch.conv_kernel });
    const bits = Uint8Array.from(dense.toArray() as Int32Array, (v) => (v ? 1 : 0));
    dense.dispose();
    maskConst.set(kind, g.constant(`mask_${kind}`, bits, [S, S]));
    maskRows.set(kind, g.node('Slice', [maskConst.get(kind)!, starts, ends, axes01]));
  }
  const headsShape = g.int64s('heads_shape', [0, 0, H, D]);
  const mergeShape = g.int64s('merge_shape', [0, 0, C]);
  const scale = g.scalar('attn_scale', 1 / Math.sqrt(D));
  const negInf = g.scalar('neg_inf', -Infinity);
  const gk = { half: g.scalar('gelu_half', 0.5), one: g.scalar('gelu_one', 1), c: g.scalar('gelu_c', Math.sqrt(2 / Math.PI)), a: g.scalar('gelu_a', 0.044715) };
  const split = (x: string): string => g.node('Transpose', [g.node('Reshape', [x, headsShape])], { perm: { ints: [0, 2, 1, 3] } }); // (B, H, T, D)
  model.blocks.forEach((block, i) => {
    const name = `blocks.${i}`;
    const a = layerNormNode(g, h, block.ln1, `${name}.ln_1`);
    const q = split(linearNode(g, a, block.attn.q, `${name}.attn.q`));
    const k = split(linearNode(g, a, block.attn.k, `${name}.attn.k`));
    const v = split(linearNode(g, a, block.attn.v, `${name}.attn.v`));
    const kAll = g.node('Concat', [past[i][0], k], { axis: { int: 2 } }, `present_key_${i}`); // (B, H, P + T, D)
    const vAll = g.node('Concat', [past[i][1], v], { axis: { int: 2 } }, `present_value_${i}`);
    const scores = g.node('Mul', [g.node('MatMul', [q, g.node('Transpose', [kAll], { perm: { ints: [0, 1, 3, 2] } })]), scale]); // (B, H, T, P + T)
    const masked = g.node('Where', [maskRows.get(block.kind)!, scores, negInf]);
    const o = g.node('MatMul', [g.node('Softmax', [masked], { axis: { int: -1 } }), vAll]); // (B, H, T, D)
    const merged = g.node('Reshape', [g.node('Transpose', [o], { perm: { ints: [0, 2, 1, 3] } }), mergeShape]); // (B, T, C)
    h = g.node('Add', [h, linearNode(g, merged, block.attn.proj, `${name}.attn.proj`)]);
    const m = layerNormNode(g, h, block.ln2, `${name}.ln_2`);
    const f = gelu(g, linearNode(g, m, block.mlp.fc, `${name}.mlp.fc`), gk);
    h = g.node('Add', [h, linearNode(g, f, block.mlp.proj, `${name}.mlp.proj`)]);
  });
  const hf = layerNormNode(g, h, model.lnF, 'ln_f');
  const last = g.node('Slice', [hf, g.int64s('last_start', [-1]), g.int64s('last_end', [2 ** 53 - 1]), g.int64s('axes1', [1])]); // (B, 1, C)
  const logits = g.node('Squeeze', [linearNode(g, last, model.imageHead, 'image_head'), g.int64s('squeeze1', [1])], {}, 'logits'); // (B, Vi)
  g.output(logits, 'logits', 'FLOAT', ['B', Vi]);
  for (let i = 0; i < NL; i++) {
    g.output(`present_key_${i}`, `present_key_${i}`, 'FLOAT', ['B', H, 'PT', D]);
    g.output(`present_value_${i}`, `present_value_${i}`, 'FLOAT', ['B', H, 'PT', D]);
  }
  return g.toModel(
    {
      'dalle.format': PRIOR_EXPORT_FORMAT,
      'dalle.role': 'prior',
      'dalle.arch': JSON.stringify(arch),
      'dalle.image_id_offset': String(Vt + L),
      'dalle.checkpoint': src.checkpoint,
      'dalle.step': String(src.step),
      'dalle.weights_sha256': src.weightsSha256 ?? '',
    },
    'dalle prior with a KV cache: input_ids (B, T) + past K/V (B, H, P, D) per layer -> next image token logits (B, Vi) + present K/V',
  );
}

export interface PriorExportResult {
  readonly dir: string;
  readonly info: PriorExportInfo;
  readonly files: { readonly prior: string; readonly info: string };
  readonly bytes: number;
}

/** Writes DIR/prior.onnx and DIR/prior.json (each atomically). */
export function exportPriorOnnx(src: PriorExportSource, dir: string): PriorExportResult {
  const weightsSha256 = src.weightsSha256 ?? weightsDigest(src.model.namedParameters());
  const bytes = encodeModel(buildPriorModel({ ...src, weightsSha256 }));
  makeOutputFolder(dir);
  const { model } = src;
  const info: PriorExportInfo = {
    format: PRIOR_EXPORT_FORMAT,
    opset: ONNX_OPSET,
    arch: { ...src.arch },
    imageIdOffset: model.textVocab + model.textLen,
    layerKinds: model.layerKinds,
    checkpoint: src.checkpoint,
    step: src.step,
    weightsSha256,
    file: PRIOR_FILE,
  };
  const files = { prior: path.resolve(dir, PRIOR_FILE), info: path.resolve(dir, PRIOR_EXPORT_INFO_FILE) };
  writeFileAtomicSync(files.prior, bytes);
  writeFileAtomicSync(files.info, `${JSON.stringify(info, null, 2)}\n`);
  return { dir: path.resolve(dir), info, files, bytes: bytes.length };
}
