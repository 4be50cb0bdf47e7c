"""Milliseconds per call of a CUDA workload, timed with CUDA events (the GPU's own clock) after 3 warm-up calls.
Shared by the attention references (cuda_sdpa.py, cuda_flex.py); they run as scripts from bench/ref, so this module
is on their path."""
import torch


def timed(fn, iters):
    for _ in range(3):
        fn()
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(iters):
        fn()
    end.record()
    torch.cuda.synchronize()
    return start.elapsed_time(end) / iters
