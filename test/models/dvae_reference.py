"""Float64 NumPy transcription of OpenAI's released dVAE forward pass (openai/DALL-E, dall_e/encoder.py, decoder.py,
utils.py; group_count = 4), for test/models/dvae.test.ts. Independent of our TypeScript: it builds the network from the
parameter names it finds in the file, exactly as the released nn.Sequential nesting names them.

usage: python3 dvae_reference.py IN.safetensors OUT.safetensors
IN holds the parameters plus `x` (mapped pixels, (B, C, H, W)) and `z` (codes, (B, V, h, w)); OUT gets `logits`
(encoder(x)) and `stats` (decoder(z)), as F64."""
import json
import struct
import sys

import numpy as np

DTYPES = {"F32": np.float32, "F64": np.float64, "I32": np.int32}


def read_safetensors(path):
    with open(path, "rb") as f:
        data = f.read()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + n])
    base = 8 + n
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        lo, hi = info["data_offsets"]
        arr = np.frombuffer(data[base + lo : base + hi], dtype=DTYPES[info["dtype"]]).reshape(info["shape"])
        out[name] = arr.astype(np.float64)
    return out


def write_safetensors(path, tensors):
    header, chunks, off = {}, [], 0
    for name, arr in tensors.items():
        b = np.ascontiguousarray(arr, dtype="<f8").tobytes()
        header[name] = {"dtype": "F64", "shape": list(arr.shape), "data_offsets": [off, off + len(b)]}
        chunks.append(b)
        off += len(b)
    h = json.dumps(header).encode()
    h += b" " * (-len(h) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + b"".join(chunks))


def conv2d(p, name, x):
    # utils.Conv2d: F.conv2d(x, w, b, padding=(kw - 1) // 2)
    w, b = p.pop(name + ".w"), p.pop(name + ".b")
    k = w.shape[-1]
    pad = (k - 1) // 2
    B, _, H, W = x.shape
    xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    y = np.zeros((B, w.shape[0], H, W))
    for dy in range(k):
        for dx in range(k):
            y += np.einsum("bihw,oi->bohw", xp[:, :, dy : dy + H, dx : dx + W], w[:, :, dy, dx])
    return y + b[None, :, None, None]


relu = lambda x: np.maximum(x, 0)


def block(p, name, x, post_gain):
    # EncoderBlock / DecoderBlock: id_path(x) + post_gain * res_path(x)
    idp = conv2d(p, name + ".id_path", x) if name + ".id_path.w" in p else x
    h = x
    for i in range(1, 5):
        h = conv2d(p, f"{name}.res_path.conv_{i}", relu(h))
    return idp + post_gain * h


def run(p, side, x, n_blk):
    post_gain = 1 / (4 * n_blk) ** 2  # n_layers = group_count * n_blk_per_group
    h = conv2d(p, f"{side}.blocks.input", x)
    for g in range(1, 5):
        for i in range(1, n_blk + 1):
            h = block(p, f"{side}.blocks.group_{g}.block_{i}", h, post_gain)
        if g < 4:
            if side == "encoder":  # nn.MaxPool2d(kernel_size=2)
                B, C, H, W = h.shape
                h = h.reshape(B, C, H // 2, 2, W // 2, 2).max(axis=(3, 5))
            else:  # nn.Upsample(scale_factor=2, mode='nearest')
                h = h.repeat(2, axis=2).repeat(2, axis=3)
    return conv2d(p, f"{side}.blocks.output.conv", relu(h))


def main():
    p = read_safetensors(sys.argv[1])
    x, z = p.pop("x"), p.pop("z")
    n_blk = max(int(k.split(".")[3][len("block_") :]) for k in p if k.startswith("encoder.blocks.group_1."))
    logits = run(p, "encoder", x, n_blk)
    stats = run(p, "decoder", z, n_blk)
    if p:
        raise SystemExit(f"unused parameters: {sorted(p)}")
    write_safetensors(sys.argv[2], {"logits": logits, "stats": stats})


if __name__ == "__main__":
    main()
