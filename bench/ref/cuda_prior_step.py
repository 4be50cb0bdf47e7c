#!/usr/bin/env python3
# PyTorch reference for bench/cuda-prior-step.ts on the same GPU: the prior of src/core/models/prior (the architecture of
# bench/ref/torch_prior.py: text embedding + learned text positions, image embedding + row / column embeddings, pre-norm
# blocks with separate q / k / v / proj, the layer's row / column / conv mask (conv in the last layer, column in every
# layer % 4 == 1), MLP 4x with tanh-GELU, final LayerNorm, text and image heads), one training step: 1/8 text + 7/8
# image cross-entropy, backward, gradient clipping at 4, AdamW (0.9 / 0.96, eps 1e-8, weight decay 4.5e-2).
# fp32 weights and activations with TF32 matmuls allowed (as cuBLASLt may use), attention through SDPA with the
# layer's boolean mask; eager, then torch.compile of the same model.
#   python3 bench/ref/cuda_prior_step.py LAYERS HEADS HEAD_DIM TEXT_LEN TEXT_VOCAB GRID IMAGE_VOCAB CONV BATCH
#       [--reps 10] [--no-compile] [--device cuda]   ->  one JSON line {"eager_ms", "compiled_ms", "params", ...}
#   --device cpu --reps 1 builds and steps the model on the CPU (a check of the script where there is no GPU).
import argparse
import json
import sys
import time

NAMES = ["layers", "heads", "head_dim", "text_len", "text_vocab", "grid", "image_vocab", "conv", "batch"]


def parse(argv):
    p = argparse.ArgumentParser(description="PyTorch prior training step on a GPU, eager and torch.compile")
    for name in NAMES:
        p.add_argument(name, type=int)
    p.add_argument("--reps", type=int, default=10, help="timed steps after 3 warm-up steps (best is reported)")
    p.add_argument("--no-compile", action="store_true", help="eager only")
    p.add_argument("--device", default="cuda")
    a = p.parse_args(argv)
    for name in NAMES:
        if getattr(a, name) < 1:
            p.error(f"{name} must be >= 1, got {getattr(a, name)}")
    if a.conv % 2 == 0:
        p.error(f"conv must be odd, got {a.conv}")
    if a.reps < 1:
        p.error("--reps must be >= 1")
    return a


def kind_of(layer, layers):
    if layer == layers - 1:
        return "conv"
    return "column" if layer % 4 == 1 else "row"


def masks(torch, TL, G, K, device):
    """(T, T) bool per kind, T = TL + G*G - 1: query i may attend key j (masks.ts isAllowed)."""
    T = TL + G * G - 1
    i = torch.arange(T, device=device)[:, None]
    j = torch.arange(T, device=device)[None, :]
    a, b = (i - TL).clamp(min=0), (j - TL).clamp(min=0)
    text = (i < TL) | (j < TL)
    r = (K - 1) // 2
    image = {"row": a - G <= b, "column": (a % G) == (b % G),
             "conv": ((a // G - b // G).abs() <= r) & ((a % G - b % G).abs() <= r)}
    return {k: (j <= i) & (text | v) for k, v in image.items()}


def build(torch, a):
    nn, F = torch.nn, torch.nn.functional
    C, H, D, TL, TV, G, IV = a.heads * a.head_dim, a.heads, a.head_dim, a.text_len, a.text_vocab, a.grid, a.image_vocab
    N = G * G
    mask_of = masks(torch, TL, G, a.conv, a.device)

    def attention(q, k, v, mask):
        if hasattr(F, "scaled_dot_product_attention"):  # PyTorch >= 2.0 (the GPU machine's)
            return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        # older PyTorch (Debian's 1.13, the CPU check of this script): the same, written out
        att = (q @ k.transpose(-1, -2)) * q.shape[-1] ** -0.5
        return att.masked_fill(~mask, float("-inf")).softmax(-1) @ v

    class Block(nn.Module):
        def __init__(self, kind):
            super().__init__()
            self.register_buffer("mask", mask_of[kind], persistent=False)
            self.ln1, self.ln2 = nn.LayerNorm(C), nn.LayerNorm(C)
            self.q, self.k, self.v, self.proj = (nn.Linear(C, C) for _ in range(4))
            self.fc, self.out = nn.Linear(C, 4 * C), nn.Linear(4 * C, C)

        def forward(self, x):
            B, T, _ = x.shape
            h = self.ln1(x)
            split = lambda t: t.view(B, T, H, D).transpose(1, 2)
            o = attention(split(self.q(h)), split(self.k(h)), split(self.v(h)), self.mask)
            x = x + self.proj(o.transpose(1, 2).reshape(B, T, C))
            return x + self.out(F.gelu(self.fc(self.ln2(x)), approximate="tanh"))

    class Prior(nn.Module):
        def __init__(self):
            super().__init__()
            self.text_emb = nn.Embedding(TV + TL, C)
            self.text_pos = nn.Parameter(torch.randn(TL, C) * 0.02)
            self.image_emb, self.row, self.col = nn.Embedding(IV, C), nn.Embedding(G, C), nn.Embedding(G, C)
            self.blocks = nn.ModuleList(Block(kind_of(i, a.layers)) for i in range(a.layers))
            self.ln_f = nn.LayerNorm(C)
            self.text_head, self.image_head = nn.Linear(C, TV + TL), nn.Linear(C, IV)
            idx = torch.arange(N - 1)
            self.register_buffer("rows", idx // G, persistent=False)
            self.register_buffer("cols", idx % G, persistent=False)

        def forward(self, text, image):
            x = torch.cat([self.text_emb(text) + self.text_pos,
                           self.image_emb(image[:, :-1]) + self.row(self.rows) + self.col(self.cols)], 1)
            for blk in self.blocks:
                x = blk(x)
            x = self.ln_f(x)
            tl = F.cross_entropy(self.text_head(x[:, :TL - 1]).reshape(-1, TV + TL), text[:, 1:].reshape(-1))
            il = F.cross_entropy(self.image_head(x[:, TL - 1:]).reshape(-1, IV), image.reshape(-1))
            return tl / 8 + 7 * il / 8

    return Prior().to(a.device)


def time_steps(torch, a, model, forward, text, image):
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, betas=(0.9, 0.96), eps=1e-8, weight_decay=4.5e-2)
    cuda = a.device.startswith("cuda")

    def step():
        opt.zero_grad(set_to_none=False)
        loss = forward(text, image)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 4.0)
        opt.step()
        return loss

    t0 = time.perf_counter()
    for _ in range(3):
        loss = step()
    if cuda:
        torch.cuda.synchronize()
    warmup_s = time.perf_counter() - t0
    best = float("inf")
    for _ in range(a.reps):
        t0 = time.perf_counter()
        step()
        if cuda:
            torch.cuda.synchronize()
        best = min(best, (time.perf_counter() - t0) * 1e3)
    return best, warmup_s, float(loss)


def main():
    a = parse(sys.argv[1:])
    import torch

    torch.manual_seed(0)
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    model = build(torch, a)
    text = torch.randint(0, a.text_vocab, (a.batch, a.text_len), device=a.device)
    image = torch.randint(0, a.image_vocab, (a.batch, a.grid * a.grid), device=a.device)
    result = {"torch": torch.__version__, "device": torch.cuda.get_device_name() if a.device.startswith("cuda") else "cpu",
              "params": sum(p.numel() for p in model.parameters()), "shape": {n: getattr(a, n) for n in NAMES}}
    if a.device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    result["eager_ms"], result["eager_warmup_s"], result["eager_loss"] = time_steps(torch, a, model, model, text, image)
    if a.device.startswith("cuda"):
        result["eager_peak_bytes"] = torch.cuda.max_memory_allocated()
    if not a.no_compile:
        try:
            compiled = torch.compile(model)
            result["compiled_ms"], result["compile_and_warmup_s"], _ = time_steps(torch, a, model, compiled, text, image)
        except Exception as e:  # a compiler failure is a figure too, not the end of the eager one
            result["compiled_error"] = f"{type(e).__name__}: {e}"[:500]
    print(json.dumps(result))


if __name__ == "__main__":
    main()
