"""BERT: a post-LayerNorm encoder trained with masked-language-model cross entropy.

    x = LN(word[input_ids] + position[0..S) + token_type[0])
    L x { x = LN1(x + out(attn(x)));  x = LN2(x + fc2(gelu(fc1(x)))) }
    logits = LN_h(gelu(dense(x))) @ word^T + bias      (decoder tied to the word embedding)
    loss = cross_entropy(logits, labels, ignore_index=-100)

Attention has separate q, k, v Linear(h, h), nh heads, no padding mask (every position is a
token). Labels hold -100 at positions that were not masked. One token type is used (row 0 of a
[type_vocab, h] table, as BERT does for single-segment input).

Parameters: (V + S + T)*h + 2h + L*(12h^2 + 13h) + h^2 + 3h + V.  No buffers.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Dict, List, Tuple

import onnx
from onnx import TensorProto

from common import GraphBuilder


@dataclasses.dataclass
class BertConfig:
    vocab: int = 30522
    seq: int = 512
    hidden: int = 768
    layers: int = 12
    heads: int = 12
    type_vocab: int = 2
    dropout: float = 0.0
    ln_eps: float = 1e-12


PRESETS: Dict[str, BertConfig] = {
    "test": BertConfig(seq=16, hidden=64, layers=2, heads=4),
    "base": BertConfig(seq=512, hidden=768, layers=12, heads=12),
    "large": BertConfig(seq=512, hidden=1024, layers=24, heads=16),
    "1.3B": BertConfig(seq=512, hidden=2048, layers=24, heads=32),
    "2.6B": BertConfig(seq=512, hidden=2560, layers=32, heads=32),
}
DEFAULT_BATCH = {"test": 4}
PAPER_BATCH = 256


def default_batch(size: str) -> int:
    return DEFAULT_BATCH.get(size, PAPER_BATCH)


def validate(cfg: BertConfig) -> None:
    if cfg.hidden % cfg.heads:
        raise ValueError(f"hidden {cfg.hidden} is not divisible by heads {cfg.heads}")


def param_count(cfg: BertConfig) -> int:
    h = cfg.hidden
    return ((cfg.vocab + cfg.seq + cfg.type_vocab) * h + 2 * h
            + cfg.layers * (12 * h * h + 13 * h) + h * h + 3 * h + cfg.vocab)


def buffer_count(cfg: BertConfig) -> int:
    return 0


def input_specs(cfg: BertConfig, batch: int) -> List[Tuple[str, int, List[int]]]:
    return [("input_ids", TensorProto.INT64, [batch, cfg.seq]),
            ("labels", TensorProto.INT64, [batch, cfg.seq])]


# --------------------------------------------------------------------------------------------
# torch


def make_model(cfg: BertConfig):
    import torch
    import torch.nn as nn
    import torch.nn.functional as F

    class SelfAttention(nn.Module):
        def __init__(self, c: BertConfig):
            super().__init__()
            self.heads, self.head_dim = c.heads, c.hidden // c.heads
            self.q = nn.Linear(c.hidden, c.hidden)
            self.k = nn.Linear(c.hidden, c.hidden)
            self.v = nn.Linear(c.hidden, c.hidden)
            self.out = nn.Linear(c.hidden, c.hidden)
            self.drop = nn.Dropout(c.dropout)

        def split_heads(self, t, B, T):
            return t.view(B, T, self.heads, self.head_dim).transpose(1, 2)

        def forward(self, x):
            B, T, C = x.size()
            q = self.split_heads(self.q(x), B, T)
            k = self.split_heads(self.k(x), B, T)
            v = self.split_heads(self.v(x), B, T)
            scores = (q @ k.transpose(-2, -1)) / math.sqrt(self.head_dim)
            probs = self.drop(F.softmax(scores, dim=-1))
            y = (probs @ v).transpose(1, 2).contiguous().view(B, T, C)
            return self.out(y)

    class EncoderLayer(nn.Module):
        def __init__(self, c: BertConfig):
            super().__init__()
            self.attn = SelfAttention(c)
            self.ln1 = nn.LayerNorm(c.hidden, eps=c.ln_eps)
            self.fc1 = nn.Linear(c.hidden, 4 * c.hidden)
            self.fc2 = nn.Linear(4 * c.hidden, c.hidden)
            self.ln2 = nn.LayerNorm(c.hidden, eps=c.ln_eps)
            self.drop = nn.Dropout(c.dropout)

        def forward(self, x):
            x = self.ln1(x + self.drop(self.attn(x)))
            return self.ln2(x + self.drop(self.fc2(F.gelu(self.fc1(x)))))

    class Embeddings(nn.Module):
        def __init__(self, c: BertConfig):
            super().__init__()
            self.word = nn.Embedding(c.vocab, c.hidden)
            self.position = nn.Embedding(c.seq, c.hidden)
            self.token_type = nn.Embedding(c.type_vocab, c.hidden)
            self.ln = nn.LayerNorm(c.hidden, eps=c.ln_eps)
            self.drop = nn.Dropout(c.dropout)

        def forward(self, input_ids):
            pos = torch.arange(input_ids.size(1), device=input_ids.device)
            x = self.word(input_ids) + self.position(pos) + self.token_type.weight[0]
            return self.drop(self.ln(x))

    class MLMHead(nn.Module):
        def __init__(self, c: BertConfig):
            super().__init__()
            self.dense = nn.Linear(c.hidden, c.hidden)
            self.ln = nn.LayerNorm(c.hidden, eps=c.ln_eps)
            self.bias = nn.Parameter(torch.zeros(c.vocab))

        def forward(self, x, word_embedding):
            return F.linear(self.ln(F.gelu(self.dense(x))), word_embedding, self.bias)

    class Bert(nn.Module):
        def __init__(self, c: BertConfig):
            super().__init__()
            self.cfg = c
            self.embeddings = Embeddings(c)
            self.layers = nn.ModuleList([EncoderLayer(c) for _ in range(c.layers)])
            self.head = MLMHead(c)
            for p in self.parameters():
                if p.dim() >= 2:
                    nn.init.normal_(p, std=0.02)

        def forward(self, input_ids, labels):
            x = self.embeddings(input_ids)
            for layer in self.layers:
                x = layer(x)
            logits = self.head(x, self.embeddings.word.weight)
            return F.cross_entropy(logits.view(-1, self.cfg.vocab), labels.view(-1),
                                   ignore_index=-100)

    validate(cfg)
    return Bert(cfg)


def example_inputs(cfg: BertConfig, batch: int, generator=None, mask_prob: float = 0.15):
    import torch
    ids = torch.randint(0, cfg.vocab, (batch, cfg.seq), generator=generator)
    masked = torch.rand((batch, cfg.seq), generator=generator) < mask_prob
    masked[:, 0] = True  # at least one prediction per sample
    labels = torch.where(masked, torch.randint(0, cfg.vocab, (batch, cfg.seq), generator=generator),
                         torch.full_like(ids, -100))
    return [("input_ids", ids), ("labels", labels)]


# --------------------------------------------------------------------------------------------
# shape-only


def _attention(b: GraphBuilder, x: str, p: str, B: int, S: int, h: int, nh: int,
               dropout: float) -> str:
    hd = h // nh
    with b.scope("attn"):
        def heads(t, perm):
            return b.op("Transpose", [b.reshape(t, [B, S, nh, hd])], perm=perm)
        q = heads(b.linear(x, p + ".q", h, h), [0, 2, 1, 3])
        kt = heads(b.linear(x, p + ".k", h, h), [0, 2, 3, 1])
        v = heads(b.linear(x, p + ".v", h, h), [0, 2, 1, 3])
        scores = b.op("Div", [b.op("MatMul", [q, kt]), b.scalar(math.sqrt(hd))])
        probs = b.dropout(b.op("Softmax", [scores], axis=-1), dropout)
        y = b.op("Transpose", [b.op("MatMul", [probs, v])], perm=[0, 2, 1, 3])
        return b.linear(b.reshape(y, [B, S, h]), p + ".out", h, h)


def build_shape_only(cfg: BertConfig, batch: int) -> onnx.ModelProto:
    validate(cfg)
    B, S, h, V, eps = batch, cfg.seq, cfg.hidden, cfg.vocab, cfg.ln_eps
    b = GraphBuilder("bert")
    ids = b.input("input_ids", TensorProto.INT64, [B, S])
    labels = b.input("labels", TensorProto.INT64, [B, S])
    with b.scope("embeddings"):
        word = b.param("embeddings.word.weight", [V, h])
        pos = b.param("embeddings.position.weight", [S, h])
        tt = b.param("embeddings.token_type.weight", [cfg.type_vocab, h])
        x = b.op("Gather", [word, ids])
        x = b.op("Add", [x, b.op("Gather", [pos, b.ints(range(S))])])
        x = b.op("Add", [x, b.op("Gather", [tt, b.scalar(0, TensorProto.INT64)], axis=0)])
        x = b.dropout(b.layer_norm(x, "embeddings.ln", h, eps), cfg.dropout)
    for i in range(cfg.layers):
        p = f"layers.{i}"
        with b.scope(p):
            a = b.dropout(_attention(b, x, p + ".attn", B, S, h, cfg.heads, cfg.dropout),
                          cfg.dropout)
            x = b.layer_norm(b.op("Add", [x, a]), p + ".ln1", h, eps)
            f = b.gelu(b.linear(x, p + ".fc1", h, 4 * h))
            f = b.dropout(b.linear(f, p + ".fc2", 4 * h, h), cfg.dropout)
            x = b.layer_norm(b.op("Add", [x, f]), p + ".ln2", h, eps)
    with b.scope("head"):
        y = b.layer_norm(b.gelu(b.linear(x, "head.dense", h, h)), "head.ln", h, eps)
        logits = b.op("MatMul", [y, b.op("Transpose", [word], perm=[1, 0])])
        logits = b.op("Add", [logits, b.param("head.bias", [V])])
    loss = b.cross_entropy(b.reshape(logits, [B * S, V]), b.reshape(labels, [B * S]))
    return b.build(loss, doc=f"BERT {cfg}")
