#!/usr/bin/env python3
"""PyTorch CPU reference timings for bench/conv2d.ts: F.conv2d forward, and forward + backward (x.grad, w.grad, b.grad).

Run by the TypeScript benchmark as a child process (Debian python3-torch 1.13, oneDNN convolutions), with
LD_PRELOAD=libjemalloc.so.2 (a caching allocator, like ours) and OPENBLAS_CORETYPE=SkylakeX (OpenBLAS's AVX-512
kernels; the OpenMP build). Reads a JSON list of shapes on stdin:
  [{"name": ..., "B": 16, "Cin": 64, "Cout": 16, "H": 64, "W": 64, "k": 3, "dx": true}, ...]
and prints one JSON object {"torch": version, "threads": n, "results": [{"name", "fwd_ms", "step_ms"}]} where each time
is the best of --reps timed repetitions after --warmup untimed ones (a repetition runs the op --inner times).
"""
import argparse
import json
import sys
import time

import torch
import torch.nn.functional as F


def best_ms(fn, warmup, reps, inner):
    for _ in range(warmup):
        fn()
    best = float("inf")
    for _ in range(reps):
        t0 = time.perf_counter()
        for _ in range(inner):
            fn()
        best = min(best, (time.perf_counter() - t0) / inner)
    return best * 1e3


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--reps", type=int, default=10)
    ap.add_argument("--inner", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    shapes = json.load(sys.stdin)
    results = []
    with torch.no_grad():
        pass
    for s in shapes:
        B, Cin, Cout, H, W, k = s["B"], s["Cin"], s["Cout"], s["H"], s["W"], s["k"]
        need_dx = s.get("dx", True)
        x = torch.randn(B, Cin, H, W).requires_grad_(need_dx)
        w = (torch.randn(Cout, Cin, k, k) / (Cin * k * k) ** 0.5).requires_grad_(True)
        b = torch.randn(Cout).requires_grad_(True)
        dy = torch.randn(B, Cout, H, W)
        inputs = [x, w, b] if need_dx else [w, b]

        def fwd():
            with torch.no_grad():
                return F.conv2d(x, w, b, padding=k // 2)

        def step():
            y = F.conv2d(x, w, b, padding=k // 2)
            return torch.autograd.grad(y, inputs, dy)

        results.append({
            "name": s["name"],
            "fwd_ms": best_ms(fwd, args.warmup, args.reps, args.inner),
            "step_ms": best_ms(step, args.warmup, args.reps, args.inner),
        })
    json.dump({"torch": torch.__version__, "threads": torch.get_num_threads(),
               "mkldnn": torch.backends.mkldnn.is_available(), "results": results}, sys.stdout)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
