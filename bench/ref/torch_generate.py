"""PyTorch reference for bench/generate.ts: the same prior architecture (src/core/models/prior/prior.ts: text and
image embeddings with row/column position embeddings, pre-norm blocks, the row/column/conv layer masks, final
LayerNorm, image head) at the same shapes, generating B x N image tokens with a KV cache: a prefill over the caption,
then one step per token (one query against the cached keys, masked by its row of the layer's mask), sampling from
softmax(logits) with torch.multinomial. Random weights: the time does not depend on their values.
Prints JSON: {"tokens_per_s": best over REPS, "ms_per_step": ..., "max_rss_mb": the process's peak resident memory,
"torch": version}.
Usage: python3 torch_generate.py N_LAYERS N_HEADS HEAD_DIM TEXT_LEN TEXT_VOCAB GRID IMAGE_VOCAB KERNEL BATCH THREADS REPS [DEVICE]
DEVICE: cpu (default) or cuda (the caches, weights and sampling there; each generation ends with a synchronize)."""
import json
import resource
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

n_layers, n_heads, head_dim, L, Vt, G, Vi, kernel, B, threads, reps = map(int, sys.argv[1:12])
dev = torch.device(sys.argv[12] if len(sys.argv) > 12 else 'cpu')
torch.set_num_threads(threads)
torch.manual_seed(0)
C = n_heads * head_dim
N = G * G
T = L + N


def allowed(kind):
    """(T, T) bool: query i may attend key j (masks.ts: causal; text keys always; image pairs by kind)."""
    i = torch.arange(T, device=dev)[:, None]
    j = torch.arange(T, device=dev)[None, :]
    causal = j <= i
    a, b = (i - L).clamp(min=0), (j - L).clamp(min=0)
    if kind == 'row':
        img = i - j <= G
    elif kind == 'column':
        img = (a % G) == (b % G)
    else:
        h = (kernel - 1) // 2
        img = ((a // G - b // G).abs() <= h) & ((a % G - b % G).abs() <= h)
    return causal & ((j < L) | img)


def kind_of(layer):
    return 'conv' if layer == n_layers - 1 else ('column' if layer % 4 == 1 else 'row')


class Block(nn.Module):
    def __init__(self, kind):
        super().__init__()
        self.ln1, self.ln2 = nn.LayerNorm(C), nn.LayerNorm(C)
        self.q, self.k, self.v, self.proj = (nn.Linear(C, C) for _ in range(4))
        self.fc, self.out = nn.Linear(C, 4 * C), nn.Linear(4 * C, C)
        self.register_buffer('mask', allowed(kind))

    def forward(self, x, cache, start):
        Bx, t, _ = x.shape
        h = self.ln1(x)
        heads = lambda y: y.view(Bx, t, n_heads, head_dim).transpose(1, 2)
        q, k, v = heads(self.q(h)), heads(self.k(h)), heads(self.v(h))
        kc, vc = cache
        kc[:, :, start:start + t] = k
        vc[:, :, start:start + t] = v
        end = start + t
        # torch 1.13 has no scaled_dot_product_attention: the plain masked softmax(q k^T / sqrt(D)) v
        scores = (q @ kc[:, :, :end].transpose(-1, -2)) * head_dim ** -0.5
        scores = scores.masked_fill(~self.mask[start:end, :end], float('-inf'))
        o = F.softmax(scores, -1) @ vc[:, :, :end]
        x = x + self.proj(o.transpose(1, 2).reshape(Bx, t, C))
        return x + self.out(F.gelu(self.fc(self.ln2(x))))


class Prior(nn.Module):
    def __init__(self):
        super().__init__()
        self.text_emb, self.text_pos = nn.Embedding(Vt + L, C), nn.Parameter(torch.randn(L, C) * 0.02)
        self.img_emb, self.row, self.col = nn.Embedding(Vi, C), nn.Embedding(G, C), nn.Embedding(G, C)
        self.blocks = nn.ModuleList(Block(kind_of(i)) for i in range(n_layers))
        self.ln_f, self.head = nn.LayerNorm(C), nn.Linear(C, Vi)

    def run(self, x, caches, start):
        for block, cache in zip(self.blocks, caches):
            x = block(x, cache, start)
        return self.head(self.ln_f(x[:, -1]))

    def generate(self, text):
        caches = [(torch.empty(B, n_heads, T, head_dim, device=dev), torch.empty(B, n_heads, T, head_dim, device=dev))
                  for _ in range(n_layers)]
        logits = self.run(self.text_emb(text) + self.text_pos, caches, 0)
        tokens = []
        for i in range(N):
            tok = torch.multinomial(F.softmax(logits, -1), 1)[:, 0]
            tokens.append(tok)
            if i == N - 1:
                break
            x = (self.img_emb(tok) + self.row.weight[i // G] + self.col.weight[i % G])[:, None]
            logits = self.run(x, caches, L + i)
        return torch.stack(tokens, 1)


model = Prior().to(dev).eval()
text = torch.randint(0, Vt, (B, L), device=dev)
sync = torch.cuda.synchronize if dev.type == 'cuda' else (lambda: None)
best = float('inf')
with torch.inference_mode():
    model.generate(text)  # warm-up
    for _ in range(reps):
        t0 = time.perf_counter()
        model.generate(text)
        sync()
        best = min(best, time.perf_counter() - t0)
max_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB
print(json.dumps({'tokens_per_s': B * N / best, 'ms_per_step': best * 1e3 / N, 'max_rss_mb': max_rss_mb, 'torch': torch.__version__}))
