"""PyTorch reference for bench/prior-step.ts: the same prior (text + row/column image embeddings, pre-norm blocks with
separate q/k/v projections and the layer's dense mask, MLP 4x with tanh-gelu, final LayerNorm, text and image heads),
one training step (1/8 text + 7/8 image cross-entropy, AdamW betas 0.9/0.96, grad clip 4).
Prints JSON: {"step_ms": best of REPS, "cpu_ms": best CPU time of a step, "torch": version}.
Usage: python3 torch_prior.py N_LAYERS N_HEADS HEAD_DIM TEXT_LEN TEXT_VOCAB GRID IMAGE_VOCAB CONV BATCH THREADS REPS"""
import json
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

L_, H, D, TL, TV, G, IV, K, B, threads, reps = map(int, sys.argv[1:12])
torch.set_num_threads(threads)
torch.manual_seed(0)
C = H * D
N = G * G
T = TL + N - 1


def allowed(kind, i, j):
    if j > i:
        return False
    if i < TL or j < TL:
        return True
    a, b = i - TL, j - TL
    if kind == 'row':
        return a - G <= b
    if kind == 'column':
        return a % G == b % G
    r = (K - 1) // 2
    return abs(a // G - b // G) <= r and abs(a % G - b % G) <= r


def kind_of(layer):
    if layer == L_ - 1:
        return 'conv'
    return 'column' if layer % 4 == 1 else 'row'


masks = {k: torch.tensor([[allowed(k, i, j) for j in range(T)] for i in range(T)]) for k in ('row', 'column', 'conv')}


class Block(nn.Module):
    def __init__(self, kind):
        super().__init__()
        self.kind = kind
        self.ln1, self.ln2 = nn.LayerNorm(C), nn.LayerNorm(C)
        self.q, self.k, self.v, self.proj = (nn.Linear(C, C) for _ in range(4))
        self.fc, self.out = nn.Linear(C, 4 * C), nn.Linear(4 * C, C)

    def forward(self, x):
        h = self.ln1(x)
        split = lambda t: t.view(B, -1, H, D).transpose(1, 2)
        q, k, v = split(self.q(h)), split(self.k(h)), split(self.v(h))
        att = (q @ k.transpose(-1, -2)) / D ** 0.5
        att = att.masked_fill(~masks[self.kind], float('-inf')).softmax(-1)
        x = x + self.proj((att @ v).transpose(1, 2).reshape(B, -1, C))
        return x + self.out(F.gelu(self.fc(self.ln2(x)), approximate='tanh'))


class Prior(nn.Module):
    def __init__(self):
        super().__init__()
        self.text_emb = nn.Embedding(TV + TL, C)
        self.text_pos = nn.Parameter(torch.randn(TL, C) * 0.02)
        self.image_emb, self.row, self.col = nn.Embedding(IV, C), nn.Embedding(G, C), nn.Embedding(G, C)
        self.blocks = nn.ModuleList(Block(kind_of(i)) for i in range(L_))
        self.ln_f = nn.LayerNorm(C)
        self.text_head, self.image_head = nn.Linear(C, TV + TL), nn.Linear(C, IV)
        idx = torch.arange(N - 1)
        self.register_buffer('rows', idx // G)
        self.register_buffer('cols', idx % G)

    def forward(self, text, image):
        x = torch.cat([self.text_emb(text) + self.text_pos,
                       self.image_emb(image[:, :-1]) + self.row(self.rows) + self.col(self.cols)], 1)
        for blk in self.blocks:
            x = blk(x)
        x = self.ln_f(x)
        tl = F.cross_entropy(self.text_head(x[:, :TL - 1]).reshape(-1, TV + TL), text[:, 1:].reshape(-1))
        il = F.cross_entropy(self.image_head(x[:, TL - 1:]).reshape(-1, IV), image.reshape(-1))
        return tl / 8 + 7 * il / 8


model = Prior()
opt = torch.optim.AdamW(model.parameters(), lr=1e-4, betas=(0.9, 0.96), eps=1e-8, weight_decay=4.5e-2)
text = torch.randint(0, TV, (B, TL))
image = torch.randint(0, IV, (B, N))


def step():
    opt.zero_grad(set_to_none=False)
    loss = model(text, image)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 4.0)
    opt.step()


for _ in range(3):
    step()
best = cpu_best = float('inf')
for _ in range(reps):
    t0, c0 = time.perf_counter(), time.process_time()
    step()
    best = min(best, (time.perf_counter() - t0) * 1e3)
    cpu_best = min(cpu_best, (time.process_time() - c0) * 1e3)
print(json.dumps({'step_ms': best, 'cpu_ms': cpu_best, 'torch': torch.__version__,
                  'params': sum(p.numel() for p in model.parameters())}))
