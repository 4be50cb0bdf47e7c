#!/usr/bin/env python3
# PyTorch FlexAttention with the prior's own block-sparse mask, the second reference for bench/cuda-attention.ts:
# the mask is not redefined here but read from MASK, the dense (T, T) uint8 mask that bench/cuda-attention.ts writes
# from src/core/models/prior/masks.ts (denseMask), so both sides skip exactly the same pairs. fp16, forward and
# forward + backward, flex_attention compiled with torch.compile.
#   python3 bench/ref/cuda_flex.py B H T D ITERS MASK  ->  one JSON line {"forward_ms", "backward_ms", "pairs", ...}
#   python3 bench/ref/cuda_flex.py --check-mask T MASK ->  {"pairs": allowed pairs, "blocks": ...} on the CPU
import argparse
import json
import sys


def parse(argv):
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--check-mask", action="store_true", help="only build the block mask (CPU) and count its pairs")
    p.add_argument("sizes", nargs="+", help="B H T D ITERS MASK, or T MASK with --check-mask")
    a = p.parse_args(argv)
    want = 2 if a.check_mask else 6
    if len(a.sizes) != want:
        p.error(f"expected {want} arguments, got {len(a.sizes)}")
    *ints, a.mask = a.sizes
    try:
        a.ints = [int(v) for v in ints]
    except ValueError:
        p.error(f"sizes must be integers, got {ints}")
    if any(v < 1 for v in a.ints):
        p.error("sizes must be >= 1")
    return a


def load_mask(torch, path, T, device):
    with open(path, "rb") as f:
        raw = f.read()
    if len(raw) != T * T:
        sys.exit(f"cuda_flex.py: {path} holds {len(raw)} bytes, a ({T}, {T}) mask needs {T * T}")
    return torch.frombuffer(bytearray(raw), dtype=torch.uint8).view(T, T).to(device).bool()


def main():
    a = parse(sys.argv[1:])
    import torch
    from cuda_timing import timed
    from torch.nn.attention.flex_attention import create_block_mask, flex_attention

    device = "cpu" if a.check_mask else "cuda"
    T = a.ints[0] if a.check_mask else a.ints[2]
    dense = load_mask(torch, a.mask, T, device)
    block = create_block_mask(lambda b, h, q, k: dense[q, k], B=None, H=None, Q_LEN=T, KV_LEN=T, device=device)
    pairs = int(dense.sum())
    if a.check_mask:
        print(json.dumps({"pairs": pairs, "sparsity": block.sparsity(), "block_size": list(block.BLOCK_SIZE)}))
        return
    B, H, T, D, iters = a.ints
    flex = torch.compile(flex_attention)
    q, k, v = (torch.randn(B, H, T, D, device=device, dtype=torch.float16, requires_grad=True) for _ in range(3))
    g = torch.randn(B, H, T, D, device=device, dtype=torch.float16)

    fwd = timed(lambda: flex(q, k, v, block_mask=block), iters)

    def fwd_bwd():
        flex(q, k, v, block_mask=block).backward(g)

    both = timed(fwd_bwd, iters)
    print(json.dumps({"forward_ms": fwd, "backward_ms": both - fwd, "pairs": pairs, "sparsity": block.sparsity(),
                      "torch": torch.__version__, "device": torch.cuda.get_device_name()}))


if __name__ == "__main__":
    main()
