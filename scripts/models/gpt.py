"""GPT-3 family: a pre-LayerNorm decoder-only transformer with tied input/output embeddings.

    x = wte[input_ids] + wpe[0..S)
    L x { x = x + proj(attn(ln1(x)));  x = x + fc2(gelu(fc(ln2(x)))) }
    logits = ln_f(x) @ wte^T;  loss = cross_entropy(logits, labels)

Attention: one fused qkv Linear(h, 3h), nh heads of size hd = h / nh, scores / sqrt(hd), a causal
mask read from a float buffer `mask` [1, 1, S, S] (tril of ones) compared with 0 (Equal) and
applied with Where(-inf), softmax, dropout, output Linear(h, h).

Parameters: V*h + S*h + L*(12h^2 + 13h) + 2h.  Buffers: L*S^2 (one causal mask per block).
"""
from __future__ import annotations

import dataclasses
import math
from typing import Dict, List, Tuple

import onnx
from onnx import TensorProto

from common import GraphBuilder


@dataclasses.dataclass
class GPTConfig:
    vocab: int = 51200
    seq: int = 1024
    hidden: int = 1024
    layers: int = 24
    heads: int = 16
    dropout: float = 0.0
    ln_eps: float = 1e-5


_PAPER = dict(vocab=51200, seq=1024)
# The paper's GPT-3 sizes (Alpa, Table 4): name -> (hidden, layers, heads).
PRESETS: Dict[str, GPTConfig] = {
    "test": GPTConfig(vocab=512, seq=16, hidden=64, layers=2, heads=4),
    "350M": GPTConfig(hidden=1024, layers=24, heads=16, **_PAPER),
    "760M": GPTConfig(hidden=1536, layers=24, heads=16, **_PAPER),
    "1.3B": GPTConfig(hidden=2048, layers=24, heads=32, **_PAPER),
    "2.6B": GPTConfig(hidden=2560, layers=32, heads=32, **_PAPER),
    "6.7B": GPTConfig(hidden=4096, layers=32, heads=32, **_PAPER),
    "15B": GPTConfig(hidden=5120, layers=48, heads=40, **_PAPER),
    "39B": GPTConfig(hidden=8192, layers=48, heads=64, **_PAPER),
}
DEFAULT_BATCH = {"test": 4}
PAPER_BATCH = 1024


def default_batch(size: str) -> int:
    return DEFAULT_BATCH.get(size, PAPER_BATCH)


def validate(cfg: GPTConfig) -> None:
    if cfg.hidden % cfg.heads:
        raise ValueError(f"hidden {cfg.hidden} is not divisible by heads {cfg.heads}")


def param_count(cfg: GPTConfig) -> int:
    h = cfg.hidden
    return cfg.vocab * h + cfg.seq * h + cfg.layers * (12 * h * h + 13 * h) + 2 * h


def buffer_count(cfg: GPTConfig) -> int:
    return cfg.layers * cfg.seq * cfg.seq


def input_specs(cfg: GPTConfig, batch: int) -> List[Tuple[str, int, List[int]]]:
    return [("input_ids", TensorProto.INT64, [batch, cfg.seq]),
            ("labels", TensorProto.INT64, [batch, cfg.seq])]


# --------------------------------------------------------------------------------------------
# torch


def _torch():
    import torch
    import torch.nn as nn
    import torch.nn.functional as F
    return torch, nn, F


_TORCH_BLOCKS = None


def torch_blocks():
    """(CausalSelfAttention, MLP) torch module classes, shared with moe.py."""
    global _TORCH_BLOCKS
    if _TORCH_BLOCKS is not None:
        return _TORCH_BLOCKS
    torch, nn, F = _torch()

    class CausalSelfAttention(nn.Module):
        def __init__(self, hidden: int, heads: int, seq: int, dropout: float):
            super().__init__()
            self.heads = heads
            self.head_dim = hidden // heads
            self.qkv = nn.Linear(hidden, 3 * hidden)
            self.proj = nn.Linear(hidden, hidden)
            self.attn_drop = nn.Dropout(dropout)
            self.resid_drop = nn.Dropout(dropout)
            self.register_buffer("mask", torch.tril(torch.ones(seq, seq)).view(1, 1, seq, seq))

        def forward(self, x):
            B, T, C = x.size()
            q, k, v = self.qkv(x).split(C, dim=2)
            q = q.view(B, T, self.heads, self.head_dim).transpose(1, 2)   # [B, nh, T, hd]
            k = k.view(B, T, self.heads, self.head_dim).transpose(1, 2)
            v = v.view(B, T, self.heads, self.head_dim).transpose(1, 2)
            scores = (q @ k.transpose(-2, -1)) / math.sqrt(self.head_dim)
            scores = scores.masked_fill(self.mask[:, :, :T, :T] == 0, float("-inf"))
            probs = self.attn_drop(F.softmax(scores, dim=-1))
            y = (probs @ v).transpose(1, 2).contiguous().view(B, T, C)
            return self.resid_drop(self.proj(y))

    class MLP(nn.Module):
        def __init__(self, hidden: int, inner: int, dropout: float):
            super().__init__()
            self.fc = nn.Linear(hidden, inner)
            self.proj = nn.Linear(inner, hidden)
            self.drop = nn.Dropout(dropout)

        def forward(self, x):
            return self.drop(self.proj(F.gelu(self.fc(x))))

    _TORCH_BLOCKS = (CausalSelfAttention, MLP)
    return _TORCH_BLOCKS


def make_model(cfg: GPTConfig):
    torch, nn, F = _torch()
    CausalSelfAttention, MLP = torch_blocks()

    class Block(nn.Module):
        def __init__(self, c: GPTConfig):
            super().__init__()
            self.ln1 = nn.LayerNorm(c.hidden, eps=c.ln_eps)
            self.attn = CausalSelfAttention(c.hidden, c.heads, c.seq, c.dropout)
            self.ln2 = nn.LayerNorm(c.hidden, eps=c.ln_eps)
            self.mlp = MLP(c.hidden, 4 * c.hidden, c.dropout)

        def forward(self, x):
            x = x + self.attn(self.ln1(x))
            return x + self.mlp(self.ln2(x))

    class GPT(nn.Module):
        def __init__(self, c: GPTConfig):
            super().__init__()
            self.cfg = c
            self.wte = nn.Embedding(c.vocab, c.hidden)
            self.wpe = nn.Embedding(c.seq, c.hidden)
            self.drop = nn.Dropout(c.dropout)
            self.blocks = nn.ModuleList([Block(c) for _ in range(c.layers)])
            self.ln_f = nn.LayerNorm(c.hidden, eps=c.ln_eps)
            for name, p in self.named_parameters():
                if p.dim() >= 2:
                    nn.init.normal_(p, std=0.02)

        def forward(self, input_ids, labels):
            T = input_ids.size(1)
            pos = torch.arange(T, device=input_ids.device)
            x = self.drop(self.wte(input_ids) + self.wpe(pos))
            for block in self.blocks:
                x = block(x)
            logits = F.linear(self.ln_f(x), self.wte.weight)  # tied output projection
            return F.cross_entropy(logits.view(-1, self.cfg.vocab), labels.view(-1))

    validate(cfg)
    return GPT(cfg)


def example_inputs(cfg: GPTConfig, batch: int, generator=None):
    torch, _, _ = _torch()
    ids = torch.randint(0, cfg.vocab, (batch, cfg.seq), generator=generator)
    labels = torch.randint(0, cfg.vocab, (batch, cfg.seq), generator=generator)
    return [("input_ids", ids), ("labels", labels)]


# --------------------------------------------------------------------------------------------
# shape-only


def causal_attention(b: GraphBuilder, x: str, prefix: str, batch: int, seq: int, hidden: int,
                     heads: int, dropout: float) -> str:
    """CausalSelfAttention above, [batch, seq, hidden] -> [batch, seq, hidden]."""
    hd = hidden // heads
    with b.scope("attn"):
        b.buffer(prefix + ".mask", [1, 1, seq, seq])
        qkv = b.linear(x, prefix + ".qkv", hidden, 3 * hidden)
        q, k, v = b.op("Split", [qkv, b.ints([hidden] * 3)], n_out=3, axis=2)
        q = b.op("Transpose", [b.reshape(q, [batch, seq, heads, hd])], perm=[0, 2, 1, 3])
        kt = b.op("Transpose", [b.reshape(k, [batch, seq, heads, hd])], perm=[0, 2, 3, 1])
        v = b.op("Transpose", [b.reshape(v, [batch, seq, heads, hd])], perm=[0, 2, 1, 3])
        scores = b.op("Div", [b.op("MatMul", [q, kt]), b.scalar(math.sqrt(hd))])
        mask = b.op("Slice", [prefix + ".mask", b.ints([0, 0]), b.ints([seq, seq]),
                              b.ints([2, 3]), b.ints([1, 1])])
        masked = b.op("Equal", [mask, b.scalar(0.0)])
        scores = b.op("Where", [masked, b.scalar(float("-inf")), scores])
        probs = b.dropout(b.op("Softmax", [scores], axis=-1), dropout)
        y = b.op("Transpose", [b.op("MatMul", [probs, v])], perm=[0, 2, 1, 3])
        y = b.reshape(y, [batch, seq, hidden])
        y = b.linear(y, prefix + ".proj", hidden, hidden)
        return b.dropout(y, dropout)


def mlp(b: GraphBuilder, x: str, prefix: str, hidden: int, inner: int, dropout: float) -> str:
    with b.scope("mlp"):
        y = b.gelu(b.linear(x, prefix + ".fc", hidden, inner))
        y = b.linear(y, prefix + ".proj", inner, hidden)
        return b.dropout(y, dropout)


def build_shape_only(cfg: GPTConfig, batch: int) -> onnx.ModelProto:
    validate(cfg)
    B, S, h, V = batch, cfg.seq, cfg.hidden, cfg.vocab
    b = GraphBuilder("gpt")
    ids = b.input("input_ids", TensorProto.INT64, [B, S])
    labels = b.input("labels", TensorProto.INT64, [B, S])
    wte = b.param("wte.weight", [V, h])
    wpe = b.param("wpe.weight", [S, h])
    with b.scope("wte"):
        tok = b.op("Gather", [wte, ids])
    with b.scope("wpe"):
        pos = b.op("Gather", [wpe, b.ints(range(S))])
    x = b.dropout(b.op("Add", [tok, pos]), cfg.dropout)
    for i in range(cfg.layers):
        p = f"blocks.{i}"
        with b.scope(p):
            a = causal_attention(b, b.layer_norm(x, p + ".ln1", h, cfg.ln_eps), p + ".attn",
                                 B, S, h, cfg.heads, cfg.dropout)
            x = b.op("Add", [x, a])
            m = mlp(b, b.layer_norm(x, p + ".ln2", h, cfg.ln_eps), p + ".mlp", h, 4 * h,
                    cfg.dropout)
            x = b.op("Add", [x, m])
    x = b.layer_norm(x, "ln_f", h, cfg.ln_eps)
    logits = b.op("MatMul", [x, b.op("Transpose", [wte], perm=[1, 0])])
    loss = b.cross_entropy(b.reshape(logits, [B * S, V]), b.reshape(labels, [B * S]))
    return b.build(loss, doc=f"GPT {cfg}")

