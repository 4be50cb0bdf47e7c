#!/usr/bin/env python3
# PyTorch's scaled_dot_product_attention with the flash backend, the reference for bench/cuda-attention.ts:
# dense causal attention (flash takes no arbitrary mask) at the prior's shape, fp16, forward and forward + backward.
#   python3 bench/ref/cuda_sdpa.py B H T D iters  ->  one JSON line {"forward_ms": ..., "backward_ms": ...}
import json
import sys

import torch
import torch.nn.functional as F

from cuda_timing import timed

B, H, T, D, iters = (int(a) for a in sys.argv[1:6])
dev = torch.device("cuda")
q, k, v = (torch.randn(B, H, T, D, device=dev, dtype=torch.float16, requires_grad=True) for _ in range(3))
g = torch.randn(B, H, T, D, device=dev, dtype=torch.float16)


with torch.nn.attention.sdpa_kernel(torch.nn.attention.SDPBackend.FLASH_ATTENTION):
    fwd = timed(lambda: F.scaled_dot_product_attention(q, k, v, is_causal=True), iters)

    def fwd_bwd():
        o = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        o.backward(g)

    both = timed(fwd_bwd, iters)
print(json.dumps({"forward_ms": fwd, "backward_ms": both - fwd, "torch": torch.__version__,
                  "device": torch.cuda.get_device_name()}))
