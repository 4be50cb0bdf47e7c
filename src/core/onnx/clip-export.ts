/**
 * dalle's small CLIP (src/core/models/clip) as a Hugging Face-style ONNX export, the file layout and input / output
 * names that optimum's CLIP export uses, so the same folder can be read by code written for those exports:
 *
 *   text_model.onnx          input_ids int64 (B, T), attention_mask int64 (B, T) -> text_embeds f32 (B, E)
 *   vision_model.onnx        pixel_values f32 (B, 3, S, S), normalised (x - image_mean) / image_std
 *                              -> image_embeds f32 (B, E)
 *   tokenizer.json           the run's byte-level BPE plus the end-of-text token <|endoftext|> (id V, the model's
 *                            end-of-text) as an added special token and a post_processor that appends it
 *   preprocessor_config.json CLIPImageProcessor fields: size, crop_size, image_mean, image_std, resample, ...
 *   config.json              model_type "clip", projection_dim, text_config / vision_config, logit_scale (the learned
 *                            exp(t)), and a `dalle` section (format, checkpoint, step, arch)
 *
 * The embeddings are the projections before L2 normalisation (as CLIPTextModelWithProjection /
 * CLIPVisionModelWithProjection return them); cosine similarity needs them normalised. The text graph pools the
 * features of each row's end-of-text token, found as ArgMax(input_ids) (the end-of-text id V is the largest id, the
 * rule of the original CLIP); the attention is causal, so the ids after it (padding, any id < V) never reach it and
 * attention_mask is accepted but not needed. T may be anything from 1 to the context length (the position table is
 * sliced to T). Op for op what Clip.encodeText / encodeImage compute: LayerNormalization with the engine's eps, the
 * tanh gelu, Conv 3x3 pad 1 + Relu + MaxPool 2x2, ReduceMean over the positions.
 * Key: B = batch, T = tokens, W = text width, H = heads, D = W / H, L = context, E = embedding size, S = image side,
 * V = tokenizer vocabulary (ids 0..V-1; V is end-of-text).
 */
import * as path from 'node:path';
import { writeFileAtomicSync } from '../io/atomic';
import { makeOutputFolder } from '../io/preflight';
import { readTextFileSync, TEXT_LIMITS } from '../io/text-file';
import type { Clip } from '../models/clip/model';
import type { TextTokenizer } from '../text';
import { GraphBuilder, ONNX_OPSET } from './graph';
import { f32, layerNormNode, linearNode } from './layers';
import { ModelProto, encodeModel } from './proto';

export const CLIP_TEXT_FILE = 'text_model.onnx';
export const CLIP_VISION_FILE = 'vision_model.onnx';
/** optimum's single-graph CLIP export (both towers; read by the ONNX CLIP scorer, not written by dalle export). */
export const CLIP_COMBINED_FILE = 'model.onnx';
export const CLIP_TOKENIZER_JSON = 'tokenizer.json';
export const CLIP_PREPROCESSOR_FILE = 'preprocessor_config.json';
export const CLIP_CONFIG_FILE = 'config.json';
export const CLIP_EXPORT_FORMAT = 'dalle-clip-onnx-1';
export const CLIP_EOT_TOKEN = '<|endoftext|>';
/** The engine's image normalisation, (x - 0.5) / 0.25 (Clip.imageFeatures). */
export const CLIP_IMAGE_MEAN = 0.5;
export const CLIP_IMAGE_STD = 0.25;

export interface ClipExportSource {
  readonly model: Clip;
  readonly tokenizer: TextTokenizer;
  /** The run's tokenizer.json (the file `tokenizer` was loaded from). */
  readonly tokenizerFile: string;
  readonly checkpoint: string;
  readonly step: number;
}




/**
 * Adds the text tower to `g`: input_ids (B, T) int64 -> the unnormalised embedding (B, E) (a value name). The
 * `prefix` keeps initializer names apart when both towers share a graph.
 */
export function addClipTextTower(g: GraphBuilder, model: Clip, ids: string, prefix = 'text_model'): string {
  const { context: L, textWidth: W, textHeads: H } = model.arch;
  const D = W / H;
  const axis0 = g.int64s(`${prefix}.axes0`, [0]);
  const T1 = g.node('Shape', [ids], { start: { int: 1 }, end: { int: 2 } }); // (1) int64
  // Token + position embeddings: rows 0..T-1 of the (L, W) position table.
  const pos = g.node('Slice', [g.constant(`${prefix}.position_embedding`, f32(model.positionEmbedding), [L, W]), g.int64s(`${prefix}.zero1`, [0]), T1, axis0]); // (T, W)
  let h = g.node('Add', [g.node('Gather', [g.constant(`${prefix}.token_embedding`, f32(model.tokenEmbedding), [model.arch.vocab + 1, W]), ids], { axis: { int: 0 } }), pos]); // (B, T, W)
  // The causal mask: rows and columns 0..T-1 of an (L, L) lower triangle.
  const tril = new Uint8Array(L * L);
  for (let i = 0; i < L; i++) for (let j = 0; j <= i; j++) tril[i * L + j] = 1;
  const TT = g.node('Concat', [T1, T1], { axis: { int: 0 } });
  const mask = g.node('Slice', [g.constant(`${prefix}.causal_mask`, tril, [L, L]), g.int64s(`${prefix}.zero2`, [0, 0]), TT, g.int64s(`${prefix}.axes01`, [0, 1])]); // (T, T)
  const headsShape = g.int64s(`${prefix}.heads_shape`, [0, 0, H, D]);
  const mergeShape = g.int64s(`${prefix}.merge_shape`, [0, 0, W]);
  const scale = g.scalar(`${prefix}.attn_scale`, 1 / Math.sqrt(D));
  const negInf = g.scalar(`${prefix}.neg_inf`, -Infinity);
  const gk = { half: g.scalar(`${prefix}.gelu_half`, 0.5), one: g.scalar(`${prefix}.gelu_one`, 1), c: g.scalar(`${prefix}.gelu_c`, Math.sqrt(2 / Math.PI)), a: g.scalar(`${prefix}.gelu_a`, 0.044715) };
  const split = (x: string): string => g.node('Transpose', [g.node('Reshape', [x, headsShape])], { perm: { ints: [0, 2, 1, 3] } }); // (B, H, T, D)
  model.blocks.blocks.forEach((block, i) => {
    const name = `${prefix}.blocks.${i}`;
    const a = layerNormNode(g, h, block.ln1, `${name}.ln1`);
    const q = split(linearNode(g, a, block.q, `${name}.q`));
    const k = split(linearNode(g, a, block.k, `${name}.k`));
    const v = split(linearNode(g, a, block.v, `${name}.v`));
    const scores = g.node('Mul', [g.node('MatMul', [q, g.node('Transpose', [k], { perm: { ints: [0, 1, 3, 2] } })]), scale]); // (B, H, T, T)
    const o = g.node('MatMul', [g.node('Softmax', [g.node('Where', [mask, scores, negInf])], { axis: { int: -1 } }), v]); // (B, H, T, D)
    const merged = g.node('Reshape', [g.node('Transpose', [o], { perm: { ints: [0, 2, 1, 3] } }), mergeShape]); // (B, T, W)
    h = g.node('Add', [h, linearNode(g, merged, block.proj, `${name}.proj`)]);
    const m = linearNode(g, layerNormNode(g, h, block.ln2, `${name}.ln2`), block.fc, `${name}.fc`);
    const x3 = g.node('Mul', [g.node('Mul', [m, m]), m]);
    const inner = g.node('Mul', [g.node('Add', [m, g.node('Mul', [x3, gk.a])]), gk.c]);
    const gelu = g.node('Mul', [g.node('Mul', [m, gk.half]), g.node('Add', [g.node('Tanh', [inner]), gk.one])]);
    h = g.node('Add', [h, linearNode(g, gelu, block.out, `${name}.out`)]);
  });
  h = layerNormNode(g, h, model.lnFinal, `${prefix}.ln_final`);
  // Each row's end-of-text position: the first largest id (end-of-text is V, above every token id).
  const end = g.node('ArgMax', [ids], { axis: { int: 1 }, keepdims: { int: 1 }, select_last_index: { int: 0 } }); // (B, 1) int64
  const pooled = g.node('GatherND', [h, end], { batch_dims: { int: 1 } }); // (B, W)
  return linearNode(g, pooled, model.textProjection, `${prefix}.text_projection`); // (B, E)
}

/** Adds the image tower: pixel_values (B, 3, S, S), already (x - 0.5) / 0.25 -> the unnormalised embedding (B, E). */
export function addClipVisionTower(g: GraphBuilder, model: Clip, pixels: string, prefix = 'vision_model'): string {
  let x = pixels;
  model.image.stages.forEach((stage, i) => {
    const [O, I] = stage.w.shape;
    const w = g.constant(`${prefix}.stages.${i}.w`, f32(stage.w), [O, I, 3, 3]);
    const b = g.constant(`${prefix}.stages.${i}.b`, f32(stage.b), [O]);
    const conv = g.node('Conv', [x, w, b], { kernel_shape: { ints: [3, 3] }, pads: { ints: [1, 1, 1, 1] }, strides: { ints: [1, 1] } });
    x = g.node('MaxPool', [g.node('Relu', [conv])], { kernel_shape: { ints: [2, 2] }, strides: { ints: [2, 2] } });
  });
  const pooled = g.node('ReduceMean', [x], { axes: { ints: [2, 3] }, keepdims: { int: 0 } }); // (B, C)
  return linearNode(g, pooled, model.imageProjection, `${prefix}.image_projection`); // (B, E)
}

function metadata(src: ClipExportSource, role: string): Record<string, string> {
  return {
    'dalle.format': CLIP_EXPORT_FORMAT,
    'dalle.role': role,
    'dalle.arch': JSON.stringify(src.model.arch),
    'dalle.checkpoint': src.checkpoint,
    'dalle.step': String(src.step),
  };
}

/** text_model.onnx: input_ids, attention_mask (B, T) int64 -> text_embeds (B, E). */
export function buildClipTextModel(src: ClipExportSource): ModelProto {
  const g = new GraphBuilder('dalle_clip_text');
  const ids = g.input('input_ids', 'INT64', ['batch_size', 'sequence_length']);
  g.input('attention_mask', 'INT64', ['batch_size', 'sequence_length']);
  g.output(addClipTextTower(g, src.model, ids), 'text_embeds', 'FLOAT', ['batch_size', src.model.arch.embed]);
  return g.toModel(metadata(src, 'clip-text'), 'dalle CLIP text tower: input_ids (B, T) int64 (end-of-text = the largest id) -> text_embeds (B, E), not normalised');
}

/** vision_model.onnx: pixel_values (B, 3, S, S) -> image_embeds (B, E). */
export function buildClipVisionModel(src: ClipExportSource): ModelProto {
  const g = new GraphBuilder('dalle_clip_vision');
  const S = src.model.arch.resolution;
  const pixels = g.input('pixel_values', 'FLOAT', ['batch_size', 3, S, S]);
  g.output(addClipVisionTower(g, src.model, pixels), 'image_embeds', 'FLOAT', ['batch_size', src.model.arch.embed]);
  return g.toModel(metadata(src, 'clip-vision'), `dalle CLIP image tower: pixel_values (B, 3, ${S}, ${S}), (x - ${CLIP_IMAGE_MEAN}) / ${CLIP_IMAGE_STD} -> image_embeds (B, E), not normalised`);
}

/**
 * optimum's single CLIP graph (input_ids, attention_mask, pixel_values -> logits_per_image, logits_per_text,
 * text_embeds, image_embeds, the embeddings L2-normalised as CLIPModel returns them). dalle export does not write it;
 * the tests use it to check that the scorer reads such a file.
 */
export function buildClipCombinedModel(src: ClipExportSource): ModelProto {
  const g = new GraphBuilder('dalle_clip');
  const S = src.model.arch.resolution;
  const ids = g.input('input_ids', 'INT64', ['text_batch_size', 'sequence_length']);
  g.input('attention_mask', 'INT64', ['text_batch_size', 'sequence_length']);
  const pixels = g.input('pixel_values', 'FLOAT', ['image_batch_size', 3, S, S]);
  const normalise = (x: string): string => {
    const norm = g.node('Sqrt', [g.node('ReduceSum', [g.node('Mul', [x, x]), g.int64s(`norm_axes_${x}`, [-1])], { keepdims: { int: 1 } })]);
    return g.node('Div', [x, norm]);
  };
  const txt = normalise(addClipTextTower(g, src.model, ids));
  const img = normalise(addClipVisionTower(g, src.model, pixels));
  const scale = g.scalar('logit_scale', Math.exp(src.model.logitScale.item()));
  const perImage = g.node('Mul', [g.node('MatMul', [img, g.node('Transpose', [txt], { perm: { ints: [1, 0] } })]), scale]);
  g.output(perImage, 'logits_per_image', 'FLOAT', ['image_batch_size', 'text_batch_size']);
  g.output(g.node('Transpose', [perImage], { perm: { ints: [1, 0] } }), 'logits_per_text', 'FLOAT', ['text_batch_size', 'image_batch_size']);
  g.output(txt, 'text_embeds', 'FLOAT', ['text_batch_size', src.model.arch.embed]);
  g.output(img, 'image_embeds', 'FLOAT', ['image_batch_size', src.model.arch.embed]);
  return g.toModel(metadata(src, 'clip'), 'dalle CLIP, both towers in one graph (optimum layout)');
}

/** The run's tokenizer.json with <|endoftext|> (id V) as an added special token appended by the post_processor. */
export function exportTokenizerJson(tokenizerFile: string, V: number): Record<string, unknown> {
  const json = JSON.parse(readTextFileSync(tokenizerFile, TEXT_LIMITS.tokenizer)) as Record<string, unknown>;
  const added = ((json.added_tokens as unknown[] | undefined) ?? []).filter((t) => (t as { content?: string }).content !== CLIP_EOT_TOKEN);
  added.push({ id: V, content: CLIP_EOT_TOKEN, single_word: false, lstrip: false, rstrip: false, normalized: false, special: true });
  json.added_tokens = added;
  json.post_processor = {
    type: 'TemplateProcessing',
    single: [{ Sequence: { id: 'A', type_id: 0 } }, { SpecialToken: { id: CLIP_EOT_TOKEN, type_id: 0 } }],
    pair: [{ Sequence: { id: 'A', type_id: 0 } }, { SpecialToken: { id: CLIP_EOT_TOKEN, type_id: 0 } }, { Sequence: { id: 'B', type_id: 1 } }, { SpecialToken: { id: CLIP_EOT_TOKEN, type_id: 1 } }],
    special_tokens: { [CLIP_EOT_TOKEN]: { id: CLIP_EOT_TOKEN, ids: [V], tokens: [CLIP_EOT_TOKEN] } },
  };
  json.truncation = null;
  json.padding = null;
  return json;
}

export interface ClipExportResult {
  readonly dir: string;
  readonly files: { readonly text: string; readonly vision: string; readonly tokenizer: string; readonly preprocessor: string; readonly config: string };
  readonly bytes: { readonly text: number; readonly vision: number };
  readonly logitScale: number;
}

/** Writes the five files of the module comment into `dir` (each atomically). */
export function exportClipOnnx(src: ClipExportSource, dir: string): ClipExportResult {
  const { arch } = src.model;
  const text = encodeModel(buildClipTextModel(src));
  const vision = encodeModel(buildClipVisionModel(src));
  const logitScale = Math.exp(src.model.logitScale.item());
  const S = arch.resolution;
  const preprocessor = {
    image_processor_type: 'CLIPImageProcessor',
    do_resize: true,
    size: { shortest_edge: S },
    // PIL's LANCZOS: the training loader resizes with sharp's lanczos3 (fit cover, centre).
    resample: 1,
    do_center_crop: true,
    crop_size: { height: S, width: S },
    do_rescale: true,
    rescale_factor: 1 / 255,
    do_normalize: true,
    image_mean: [CLIP_IMAGE_MEAN, CLIP_IMAGE_MEAN, CLIP_IMAGE_MEAN],
    image_std: [CLIP_IMAGE_STD, CLIP_IMAGE_STD, CLIP_IMAGE_STD],
    do_convert_rgb: true,
    // Transparent pixels are flattened onto white before resizing (as dalle's loader does).
    background: [255, 255, 255],
  };
  const config = {
    model_type: 'clip',
    projection_dim: arch.embed,
    logit_scale: logitScale,
    logit_scale_init_value: Math.log(1 / 0.07),
    text_config: {
      vocab_size: arch.vocab + 1,
      hidden_size: arch.textWidth,
      num_hidden_layers: arch.textLayers,
      num_attention_heads: arch.textHeads,
      intermediate_size: 4 * arch.textWidth,
      max_position_embeddings: arch.context,
      hidden_act: 'gelu_pytorch_tanh',
      eos_token_id: arch.vocab,
      pad_token_id: 0,
      bos_token_id: null,
    },
    vision_config: { image_size: S, num_channels: 3, architecture: 'conv', channels: arch.imageChannels },
    dalle: { format: CLIP_EXPORT_FORMAT, opset: ONNX_OPSET, arch, checkpoint: src.checkpoint, step: src.step, lowercase: src.tokenizer.lowercase },
  };
  makeOutputFolder(dir);
  const files = {
    text: path.resolve(dir, CLIP_TEXT_FILE),
    vision: path.resolve(dir, CLIP_VISION_FILE),
    tokenizer: path.resolve(dir, CLIP_TOKENIZER_JSON),
    preprocessor: path.resolve(dir, CLIP_PREPROCESSOR_FILE),
    config: path.resolve(dir, CLIP_CONFIG_FILE),
  };
  writeFileAtomicSync(files.text, text);
  writeFileAtomicSync(files.vision, vision);
  writeFileAtomicSync(files.tokenizer, `${JSON.stringify(exportTokenizerJson(src.tokenizerFile, src.tokenizer.vocabSize), null, 2)}\n`);
  writeFileAtomicSync(files.preprocessor, `${JSON.stringify(preprocessor, null, 2)}\n`);
  writeFileAtomicSync(files.config, `${JSON.stringify(config, null, 2)}\n`);
  return { dir: path.resolve(dir), files, bytes: { text: text.length, vision: vision.length }, logitScale };
}
