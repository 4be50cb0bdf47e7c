/**
 * The dVAE as two ONNX graphs (opset 17, f32 weights as initializers), op for op what src/core/models/dvae computes:
 *
 *   dvae-encoder.onnx  pixels f32 (N, C, H, W) in [0, 1]
 *                        -> logits f32 (N, V, H/f, W/f)   map (1 - 2 eps) x + eps, then the encoder
 *                        -> codes i32 (N, H/f, W/f)       ArgMax over V (ties to the lowest code, as the engine)
 *   dvae-decoder.onnx  codes i32 (N, h, w)
 *                        -> pixels f32 (N, C, f h, f w)   Gather of the input 1x1 conv's rows (+ bias), the decoder,
 *                                                          then clip((sigmoid(mu) - eps) / (1 - 2 eps), 0, 1)
 *   dvae.json          what the graphs are for: architecture, eps, resolution, checkpoint, files, and the digest of
 *                      the weights exported (nn/weights-digest.ts), so `--onnx DIR` can check it against --dvae
 *
 * H and W (and h, w) are symbolic, so the graphs take any side that is a multiple of f. Resblocks are
 * id(x) + post_gain * res(x); max-pool is MaxPool 2x2 stride 2; nearest 2x upsampling is Resize (nearest, asymmetric,
 * floor: each pixel copied into a 2x2 block, exactly upsample2x).
 * Key: N = batch, C = image channels, V = vocab_size, f = 2^(G-1), G = n_groups.
 */
import * as path from 'node:path';
import { writeFileAtomicSync } from '../io/atomic';
import { makeOutputFolder } from '../io/preflight';
import { Dvae, DvaeArch, ResBlock } from '../models/dvae';
import { Conv2d } from '../nn';
import { weightsDigest } from '../nn/weights-digest';
import { GraphBuilder, ONNX_OPSET } from './graph';
import { f32 } from './layers';
import { ModelProto, encodeModel } from './proto';

export const DVAE_ENCODER_FILE = 'dvae-encoder.onnx';
export const DVAE_DECODER_FILE = 'dvae-decoder.onnx';
export const DVAE_EXPORT_INFO_FILE = 'dvae.json';
/** `format` of dvae.json and the `dalle.format` metadata of both graphs. */
export const DVAE_EXPORT_FORMAT = 'dalle-dvae-onnx-1';

/** dvae.json: what an exported dVAE is, so `--runtime onnx` can check the files against the run it is used with. */
export interface DvaeExportInfo {
  readonly format: typeof DVAE_EXPORT_FORMAT;
  readonly opset: number;
  readonly arch: DvaeArch;
  readonly eps: number;
  /** The image side the run was trained at (the graphs take any multiple of downsampleFactor). */
  readonly resolution: number;
  readonly downsampleFactor: number;
  readonly checkpoint: string;
  readonly step: number;
  /** weightsDigest of the model exported (absent in exports of older versions, which cannot be checked). */
  readonly weightsSha256?: string;
  readonly files: { readonly encoder: string; readonly decoder: string };
}

export interface DvaeExportSource {
  readonly model: Dvae;
  readonly resolution: number;
  readonly checkpoint: string;
  readonly step: number;
  /** weightsDigest(model.namedParameters()) when the caller has it already (it is computed otherwise). */
  readonly weightsSha256?: string;
}


/** Conv with same padding ((k - 1) / 2 each side, odd k), weights and bias as initializers named after the module. */
function conv(g: GraphBuilder, x: string, c: Conv2d, name: string): string {
  const k = c.kernelSize;
  const p = (k - 1) / 2;
  const w = g.constant(`${name}.w`, f32(c.w), [c.outChannels, c.inChannels, k, k]);
  const b = g.constant(`${name}.b`, f32(c.b), [c.outChannels]);
  return g.node('Conv', [x, w, b], { kernel_shape: { ints: [k, k] }, pads: { ints: [p, p, p, p] }, strides: { ints: [1, 1] } });
}

/** x (N, I, H, W) -> id_path(x) + post_gain * res_path(x) (N, O, H, W); res_path = [ReLU, conv] x 4. */
function resblock(g: GraphBuilder, x: string, block: ResBlock, name: string, gain: string): string {
  let h = x;
  block.resPath.forEach((c, j) => {
    h = conv(g, g.node('Relu', [h]), c, `${name}.res_path.conv_${j + 1}`);
  });
  const id = block.idPath ? conv(g, x, block.idPath, `${name}.id_path`) : x;
  return g.node('Add', [id, g.node('Mul', [h, gain])]);
}

function metadata(info: Omit<DvaeExportInfo, 'files'>, role: 'encoder' | 'decoder'): Record<string, string> {
  return {
    'dalle.format': DVAE_EXPORT_FORMAT,
    'dalle.role': `dvae-${role}`,
    'dalle.arch': JSON.stringify(info.arch),
    'dalle.eps': String(info.eps),
    'dalle.resolution': String(info.resolution),
    'dalle.checkpoint': info.checkpoint,
    'dalle.step': String(info.step),
    'dalle.weights_sha256': info.weightsSha256 ?? '',
  };
}

function infoOf(src: DvaeExportSource): Omit<DvaeExportInfo, 'files'> {
  const { model } = src;
  return {
    format: DVAE_EXPORT_FORMAT,
    opset: ONNX_OPSET,
    arch: { ...model.arch },
    eps: model.eps,
    resolution: src.resolution,
    downsampleFactor: model.downsampleFactor,
    checkpoint: src.checkpoint,
    step: src.step,
    weightsSha256: src.weightsSha256 ?? weightsDigest(model.namedParameters()),
  };
}

/** The encoder graph: pixels (N, C, H, W) in [0, 1] -> logits (N, V, h, w) and codes i32 (N, h, w). */
export function buildDvaeEncoderModel(src: DvaeExportSource): ModelProto {
  const { model } = src;
  const { input_channels: C, vocab_size: V } = model.arch;
  const enc = model.encoder;
  const g = new GraphBuilder('dalle_dvae_encoder');
  const x = g.input('pixels', 'FLOAT', ['N', C, 'H', 'W']);
  // map_pixels: (1 - 2 eps) x + eps, into the logit-Laplace support.
  let h = g.node('Add', [g.node('Mul', [x, g.scalar('map.scale', 1 - 2 * model.eps)]), g.scalar('map.shift', model.eps)]);
  h = conv(g, h, enc.input, 'encoder.blocks.input'); // (N, n_hid, H, W)
  const gain = g.scalar('encoder.post_gain', enc.groups[0]?.blocks[0]?.postGain ?? 1);
  enc.groups.forEach((group, gi) => {
    group.blocks.forEach((b, bi) => {
      h = resblock(g, h, b, `encoder.blocks.group_${gi + 1}.block_${bi + 1}`, gain);
    });
    if (group.pool) h = g.node('MaxPool', [h], { kernel_shape: { ints: [2, 2] }, strides: { ints: [2, 2] } });
  });
  const logits = conv(g, g.node('Relu', [h]), enc.output, 'encoder.blocks.output.conv'); // (N, V, h, w)
  g.output(logits, 'logits', 'FLOAT', ['N', V, 'h', 'w']);
  // ArgMax returns int64; the first maximum wins (select_last_index 0), like the engine's argmaxCodes.
  const codes64 = g.node('ArgMax', [logits], { axis: { int: 1 }, keepdims: { int: 0 }, select_last_index: { int: 0 } });
  g.node('Cast', [codes64], { to: { int: 6 } }, 'codes'); // INT32
  g.output('codes', 'codes', 'INT32', ['N', 'h', 'w']);
  return g.toModel(metadata(infoOf(src), 'encoder'), 'dalle dVAE encoder: pixels (N, C, H, W) in [0, 1] -> logits (N, V, H/f, W/f), argmax codes int32 (N, H/f, W/f)');
}

/** The decoder graph: codes i32 (N, h, w) -> pixels (N, C, H, W) in [0, 1]. */
export function buildDvaeDecoderModel(src: DvaeExportSource): ModelProto {
  const { model } = src;
  const { input_channels: C, vocab_size: V, n_init: M } = model.arch;
  const dec = model.decoder;
  const g = new GraphBuilder('dalle_dvae_decoder');
  const codes = g.input('codes', 'INT32', ['N', 'h', 'w']);
  // The input 1x1 conv of a one-hot code is a row of its weight: Gather from the (V, n_init) table, plus the bias
  // (decoder.forwardCodes). Weight (n_init, V, 1, 1) -> table (V, n_init).
  const w = f32(dec.input.w);
  const table = new Float32Array(V * M);
  for (let m = 0; m < M; m++) for (let v = 0; v < V; v++) table[v * M + m] = w[m * V + v];
  const rows = g.node('Gather', [g.constant('decoder.blocks.input.table', table, [V, M]), codes], { axis: { int: 0 } }); // (N, h, w, M)
  const bias = g.constant('decoder.blocks.input.b', f32(dec.input.b), [1, M, 1, 1]);
  let h = g.node('Add', [g.node('Transpose', [rows], { perm: { ints: [0, 3, 1, 2] } }), bias]); // (N, M, h, w)
  const gain = g.scalar('decoder.post_gain', dec.groups[0]?.blocks[0]?.postGain ?? 1);
  const scales = g.constant('upsample.scales', Float32Array.of(1, 1, 2, 2), [4]);
  dec.groups.forEach((group, gi) => {
    group.blocks.forEach((b, bi) => {
      h = resblock(g, h, b, `decoder.blocks.group_${gi + 1}.block_${bi + 1}`, gain);
    });
    if (group.upsample) {
      h = g.node('Resize', [h, '', scales], {
        mode: { string: 'nearest' },
        coordinate_transformation_mode: { string: 'asymmetric' },
        nearest_mode: { string: 'floor' },
      });
    }
  });
  const stats = conv(g, g.node('Relu', [h]), dec.output, 'decoder.blocks.output.conv'); // (N, 2C, H, W)
  // mu = stats[:, :C]; pixels = clip((sigmoid(mu) - eps) / (1 - 2 eps), 0, 1) (unmap_pixels).
  const mu = g.node('Slice', [stats, g.int64s('mu.starts', [0]), g.int64s('mu.ends', [C]), g.int64s('mu.axes', [1])]);
  const y = g.node('Sigmoid', [mu]);
  const scaled = g.node('Add', [g.node('Mul', [y, g.scalar('unmap.scale', 1 / (1 - 2 * model.eps))]), g.scalar('unmap.shift', -model.eps / (1 - 2 * model.eps))]);
  g.node('Clip', [scaled, g.scalar('unmap.min', 0), g.scalar('unmap.max', 1)], {}, 'pixels');
  g.output('pixels', 'pixels', 'FLOAT', ['N', C, 'H', 'W']);
  return g.toModel(metadata(infoOf(src), 'decoder'), 'dalle dVAE decoder: codes int32 (N, h, w) -> pixels (N, C, f h, f w) in [0, 1]');
}

export interface DvaeExportResult {
  readonly dir: string;
  readonly info: DvaeExportInfo;
  /** Absolute paths and sizes in bytes. */
  readonly files: { readonly encoder: string; readonly decoder: string; readonly info: string };
  readonly bytes: { readonly encoder: number; readonly decoder: number };
}

/** Writes DIR/dvae-encoder.onnx, DIR/dvae-decoder.onnx and DIR/dvae.json (each atomically). */
export function exportDvaeOnnx(src: DvaeExportSource, dir: string): DvaeExportResult {
  makeOutputFolder(dir);
  const described = infoOf(src);
  const info: DvaeExportInfo = { ...described, files: { encoder: DVAE_ENCODER_FILE, decoder: DVAE_DECODER_FILE } };
  const withDigest = { ...src, weightsSha256: described.weightsSha256 }; // hashed once for the two graphs and dvae.json
  const encoder = encodeModel(buildDvaeEncoderModel(withDigest));
  const decoder = encodeModel(buildDvaeDecoderModel(withDigest));
  const files = {
    encoder: path.resolve(dir, DVAE_ENCODER_FILE),
    decoder: path.resolve(dir, DVAE_DECODER_FILE),
    info: path.resolve(dir, DVAE_EXPORT_INFO_FILE),
  };
  writeFileAtomicSync(files.encoder, encoder);
  writeFileAtomicSync(files.decoder, decoder);
  writeFileAtomicSync(files.info, `${JSON.stringify(info, null, 2)}\n`);
  return { dir: path.resolve(dir), info, files, bytes: { encoder: encoder.length, decoder: decoder.length } };
}
