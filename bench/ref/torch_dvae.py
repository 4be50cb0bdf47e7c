"""PyTorch reference for bench/dvae-step.ts: the released dVAE architecture (openai/DALL-E's encoder.py/decoder.py,
transcribed compactly) at the same shapes, one training step (gumbel-softmax, logit-Laplace NLL, KL to uniform,
AdamW) and argmax encoding. Prints JSON: {"step_ms": best, "encode_images_per_s": ...}.
Usage: python3 torch_dvae.py N_HID N_GROUPS N_BLK VOCAB RES BATCH THREADS REPS"""
import json
import math
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

n_hid, n_groups, n_blk, vocab, res, batch, threads, reps = map(int, sys.argv[1:9])
torch.set_num_threads(threads)
torch.manual_seed(0)
EPS = 0.1


class Conv(nn.Conv2d):
    def __init__(self, n_in, n_out, kw):
        super().__init__(n_in, n_out, kw, padding=(kw - 1) // 2)
        nn.init.normal_(self.weight, std=1 / math.sqrt(n_in * kw * kw))
        nn.init.zeros_(self.bias)


class Block(nn.Module):
    def __init__(self, n_in, n_out, n_layers, kernels):
        super().__init__()
        hid = n_out // 4
        self.post_gain = 1 / n_layers ** 2
        self.id_path = Conv(n_in, n_out, 1) if n_in != n_out else nn.Identity()
        widths = [n_in, hid, hid, hid, n_out]
        layers = []
        for i, k in enumerate(kernels):
            layers += [nn.ReLU(), Conv(widths[i], widths[i + 1], k)]
        self.res_path = nn.Sequential(*layers)

    def forward(self, x):
        return self.id_path(x) + self.post_gain * self.res_path(x)


def encoder():
    layers, n_layers, width = [Conv(3, n_hid, 7)], n_groups * n_blk, n_hid
    for g in range(n_groups):
        out = n_hid * 2 ** g
        for b in range(n_blk):
            layers.append(Block(width if b == 0 else out, out, n_layers, (3, 3, 3, 1)))
        width = out
        if g < n_groups - 1:
            layers.append(nn.MaxPool2d(2))
    layers += [nn.ReLU(), Conv(width, vocab, 1)]
    return nn.Sequential(*layers)


def decoder():
    n_init = 128
    layers, n_layers, width = [Conv(vocab, n_init, 1)], n_groups * n_blk, n_init
    for g in range(n_groups):
        out = n_hid * 2 ** (n_groups - 1 - g)
        for b in range(n_blk):
            layers.append(Block(width if b == 0 else out, out, n_layers, (1, 3, 3, 3)))
        width = out
        if g < n_groups - 1:
            layers.append(nn.Upsample(scale_factor=2, mode='nearest'))
    layers += [nn.ReLU(), Conv(width, 6, 1)]
    return nn.Sequential(*layers)


enc, dec = encoder(), decoder()
opt = torch.optim.AdamW(list(enc.parameters()) + list(dec.parameters()), lr=1e-4, betas=(0.9, 0.999), eps=1e-8,
                        weight_decay=1e-4)
x = torch.rand(batch, 3, res, res)


def step():
    opt.zero_grad(set_to_none=False)
    xm = (1 - 2 * EPS) * x + EPS
    logits = enc(xm)
    g = -torch.log(-torch.log(torch.rand_like(logits).clamp_(1e-10, 1 - 1e-7)))
    z = F.softmax((logits + g) / 0.5, dim=1)
    stats = dec(z)
    mu, ln_b = stats[:, :3], stats[:, 3:]
    logit_x = torch.log(xm) - torch.log1p(-xm)
    nll = (torch.abs(logit_x - mu) * torch.exp(-ln_b) + ln_b + math.log(2) + torch.log(xm) + torch.log1p(-xm)).sum() / batch
    logq = F.log_softmax(logits, dim=1)
    kl = (logq.exp() * (logq + math.log(vocab))).sum() / batch
    (nll + 1.0 * kl).backward()
    opt.step()


def best_ms(fn, reps):
    for _ in range(3):
        fn()
    best = float('inf')
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best * 1e3


step_ms = best_ms(step, reps)
with torch.no_grad():
    encode_ms = best_ms(lambda: enc((1 - 2 * EPS) * x + EPS).argmax(dim=1), reps)
print(json.dumps({"step_ms": step_ms, "encode_ms": encode_ms, "encode_images_per_s": batch / encode_ms * 1e3,
                  "torch": torch.__version__, "threads": threads}))
