"""GShard mixture-of-experts language model.

A pre-LayerNorm decoder like gpt.py (same causal attention with a float mask buffer) whose MLP is
replaced, in every `moe_every`-th layer (layers 1, 3, 5, ... by default), by a top-2 gated MoE
layer in GShard's dense-einsum formulation:

    tokens [B, S, h] -> groups xg [G, Sg, h]          (Sg = group_size, G = B*S / Sg)
    gates  = softmax(xg @ wg)                          [G, Sg, E]
    (v, i) = topk(gates, 2)                            first and second choice per token
    m1, m2 = one_hot(i[..., 0], E), one_hot(i[..., 1], E)
    pos1   = cumsum(m1, over Sg) - m1                  rank of each token inside its expert
    pos2   = cumsum(m2, over Sg) - m2 + sum(m1, over Sg)   (second choices queue after first)
    keepK  = mK * (posK < C)                           C = ceil(2 * Sg * capacity_factor / E)
    dK     = keepK[..., None] * one_hot(sum(posK * keepK, -1), C)[..., None, :]  [G, Sg, E, C]
    dispatch = d1 + d2;  combine = g1 * d1 + g2 * d2   (g1, g2: top-2 gates renormalised)
    xe = einsum("gsec,gsm->egcm", dispatch, xg)        expert inputs [E, G, C, h]
    ye = einsum("egcf,efm->egcm", gelu(einsum("egcm,emf->egcf", xe, wi)), wo)
    y  = einsum("gsec,egcm->gsm", combine, ye)  -> [B, S, h]

Expert weights wi [E, h, F] and wo [E, F, h], F = mlp_ratio * h, no biases; the dense MLP is
Linear(h, F) - GELU - Linear(F, h). The loss is the LM cross entropy plus
aux_loss_coef * sum over MoE layers of GShard's balancing loss
mean_{g,e}(mean_s gates * mean_s m1) * E^2.

The paper's sizes (Alpa, Table 4) use 16 heads, mlp_ratio 8 and tied input/output embeddings;
with those choices this definition lands on the paper's counts (380M ... 70B).

Parameters, with F = mlp_ratio * h and (n_dense, n_moe) dense and MoE layers:
    V*h (2*V*h when untied) + S*h + 2h
    + n_dense * (4h^2 + 8h + 2hF + F + h)      ln1, qkv, proj, ln2, fc, fc2
    + n_moe   * (4h^2 + 8h + hE + 2EhF)        ln1, qkv, proj, ln2, wg, wi, wo
Buffers: L*S^2 (one causal mask per block).
"""
from __future__ import annotations

import dataclasses
import math
from typing import Dict, List, Tuple

import onnx
from onnx import TensorProto

import gpt
from common import GraphBuilder, ceil_div


@dataclasses.dataclass
class MoEConfig:
    vocab: int = 32000
    seq: int = 1024
    hidden: int = 768
    layers: int = 8
    heads: int = 16
    experts: int = 8
    group_size: int = 2048        # expert group size Sg, in tokens
    capacity_factor: float = 2.0  # C = ceil(2 * Sg * capacity_factor / E)
    mlp_ratio: int = 8            # F = mlp_ratio * hidden (dense MLP and each expert)
    moe_every: int = 2            # layer i is a MoE layer when i % moe_every == moe_every - 1
    tie_embeddings: bool = True
    aux_loss_coef: float = 0.01
    dropout: float = 0.0
    ln_eps: float = 1e-5


_PAPER = dict(vocab=32000, seq=1024, heads=16, group_size=2048)
PRESETS: Dict[str, MoEConfig] = {
    "test": MoEConfig(vocab=512, seq=16, hidden=64, layers=2, heads=4, experts=4, group_size=32),
    "380M": MoEConfig(hidden=768, layers=8, experts=8, **_PAPER),
    "690M": MoEConfig(hidden=768, layers=8, experts=16, **_PAPER),
    "1.3B": MoEConfig(hidden=768, layers=16, experts=16, **_PAPER),
    "2.4B": MoEConfig(hidden=1024, layers=16, experts=16, **_PAPER),
    "10B": MoEConfig(hidden=1536, layers=16, experts=32, **_PAPER),
    "27B": MoEConfig(hidden=2048, layers=16, experts=48, **_PAPER),
    "70B": MoEConfig(hidden=2048, layers=32, experts=64, **_PAPER),
}
DEFAULT_BATCH = {"test": 4}
PAPER_BATCH = 1024


def default_batch(size: str) -> int:
    return DEFAULT_BATCH.get(size, PAPER_BATCH)


def capacity(cfg: MoEConfig) -> int:
    return ceil_div(math.ceil(2 * cfg.group_size * cfg.capacity_factor), cfg.experts)


def is_moe_layer(cfg: MoEConfig, i: int) -> bool:
    return i % cfg.moe_every == cfg.moe_every - 1


def validate(cfg: MoEConfig, batch: int = None) -> None:
    if cfg.hidden % cfg.heads:
        raise ValueError(f"hidden {cfg.hidden} is not divisible by heads {cfg.heads}")
    if cfg.experts < 2:
        raise ValueError("top-2 gating needs at least 2 experts")
    if batch is not None and (batch * cfg.seq) % cfg.group_size:
        raise ValueError(f"batch*seq = {batch * cfg.seq} tokens is not a multiple of the expert "
                         f"group size {cfg.group_size} (pass --group-size)")


def param_count(cfg: MoEConfig) -> int:
    h, F, E = cfg.hidden, cfg.mlp_ratio * cfg.hidden, cfg.experts
    n_moe = sum(is_moe_layer(cfg, i) for i in range(cfg.layers))
    n_dense = cfg.layers - n_moe
    common = 4 * h * h + 8 * h       # ln1, qkv, proj, ln2
    emb = cfg.vocab * h * (1 if cfg.tie_embeddings else 2) + cfg.seq * h
    return (emb + 2 * h + n_dense * (common + 2 * h * F + F + h)
            + n_moe * (common + h * E + 2 * E * h * F))


def buffer_count(cfg: MoEConfig) -> int:
    return cfg.layers * cfg.seq * cfg.seq


def input_specs(cfg: MoEConfig, batch: int) -> List[Tuple[str, int, List[int]]]:
    return [("input_ids", TensorProto.INT64, [batch, cfg.seq]),
            ("labels", TensorProto.INT64, [batch, cfg.seq])]


# --------------------------------------------------------------------------------------------
# torch


def make_model(cfg: MoEConfig):
    import torch
    import torch.nn as nn
    import torch.nn.functional as F

    gpt_attention, gpt_mlp = gpt.torch_blocks()

    class MoELayer(nn.Module):
        def __init__(self, c: MoEConfig):
            super().__init__()
            h, F_, E = c.hidden, c.mlp_ratio * c.hidden, c.experts
            self.experts, self.group_size, self.capacity = E, c.group_size, capacity(c)
            self.wg = nn.Parameter(torch.randn(h, E) * 0.02)
            self.wi = nn.Parameter(torch.randn(E, h, F_) * 0.02)
            self.wo = nn.Parameter(torch.randn(E, F_, h) * 0.02)
            self.drop = nn.Dropout(c.dropout)

        def forward(self, x):
            E, C = self.experts, self.capacity
            xg = x.reshape(-1, self.group_size, x.size(-1))            # [G, Sg, h]
            gates = F.softmax(xg @ self.wg, dim=-1)                     # [G, Sg, E]
            top_val, top_idx = torch.topk(gates, 2, dim=-1)
            m1 = F.one_hot(top_idx[..., 0], E).to(x.dtype)
            m2 = F.one_hot(top_idx[..., 1], E).to(x.dtype)
            pos1 = torch.cumsum(m1, dim=1) - m1
            pos2 = torch.cumsum(m2, dim=1) - m2 + m1.sum(dim=1, keepdim=True)
            keep1 = m1 * (pos1 < C).to(x.dtype)
            keep2 = m2 * (pos2 < C).to(x.dtype)
            slot1 = F.one_hot((pos1 * keep1).sum(dim=-1).long(), C).to(x.dtype)  # [G, Sg, C]
            slot2 = F.one_hot((pos2 * keep2).sum(dim=-1).long(), C).to(x.dtype)
            d1 = keep1.unsqueeze(-1) * slot1.unsqueeze(-2)              # [G, Sg, E, C]
            d2 = keep2.unsqueeze(-1) * slot2.unsqueeze(-2)
            g1, g2 = top_val[..., 0], top_val[..., 1]
            denom = g1 + g2
            g1 = (g1 / denom).unsqueeze(-1).unsqueeze(-1)
            g2 = (g2 / denom).unsqueeze(-1).unsqueeze(-1)
            dispatch = d1 + d2
            combine = g1 * d1 + g2 * d2
            xe = torch.einsum("gsec,gsm->egcm", dispatch, xg)           # [E, G, C, h]
            he = F.gelu(torch.einsum("egcm,emf->egcf", xe, self.wi))
            ye = torch.einsum("egcf,efm->egcm", he, self.wo)
            y = torch.einsum("gsec,egcm->gsm", combine, ye)             # [G, Sg, h]
            aux = (gates.mean(dim=1) * m1.mean(dim=1)).mean() * float(E * E)
            return self.drop(y.reshape(x.shape)), aux

    class Block(nn.Module):
        def __init__(self, c: MoEConfig, moe: bool):
            super().__init__()
            self.is_moe = moe
            self.ln1 = nn.LayerNorm(c.hidden, eps=c.ln_eps)
            self.attn = gpt_attention(c.hidden, c.heads, c.seq, c.dropout)
            self.ln2 = nn.LayerNorm(c.hidden, eps=c.ln_eps)
            if moe:
                self.moe = MoELayer(c)
            else:
                self.mlp = gpt_mlp(c.hidden, c.mlp_ratio * c.hidden, c.dropout)

        def forward(self, x):
            x = x + self.attn(self.ln1(x))
            if self.is_moe:
                y, aux = self.moe(self.ln2(x))
                return x + y, aux
            return x + self.mlp(self.ln2(x)), None

    class MoELM(nn.Module):
        def __init__(self, c: MoEConfig):
            super().__init__()
            self.cfg = c
            self.wte = nn.Embedding(c.vocab, c.hidden)
            self.wpe = nn.Embedding(c.seq, c.hidden)
            self.drop = nn.Dropout(c.dropout)
            self.blocks = nn.ModuleList([Block(c, is_moe_layer(c, i)) for i in range(c.layers)])
            self.ln_f = nn.LayerNorm(c.hidden, eps=c.ln_eps)
            if not c.tie_embeddings:
                self.lm_head = nn.Linear(c.hidden, c.vocab, bias=False)
            for p in self.parameters():
                if p.dim() == 2:
                    nn.init.normal_(p, std=0.02)

        def forward(self, input_ids, labels):
            pos = torch.arange(input_ids.size(1), device=input_ids.device)
            x = self.drop(self.wte(input_ids) + self.wpe(pos))
            aux_total = None
            for block in self.blocks:
                x, aux = block(x)
                if aux is not None:
                    aux_total = aux if aux_total is None else aux_total + aux
            x = self.ln_f(x)
            if self.cfg.tie_embeddings:
                logits = F.linear(x, self.wte.weight)
            else:
                logits = self.lm_head(x)
            loss = F.cross_entropy(logits.view(-1, self.cfg.vocab), labels.view(-1))
            if aux_total is not None and self.cfg.aux_loss_coef:
                loss = loss + self.cfg.aux_loss_coef * aux_total
            return loss

    validate(cfg)
    return MoELM(cfg)


def example_inputs(cfg: MoEConfig, batch: int, generator=None):
    return gpt.example_inputs(cfg, batch, generator)


# --------------------------------------------------------------------------------------------
# shape-only


def _moe_layer(b: GraphBuilder, x: str, p: str, cfg: MoEConfig, batch: int) -> Tuple[str, str]:
    """MoELayer above on x [B, S, h]; returns (y [B, S, h], aux scalar)."""
    h, F_, E, C, Sg = cfg.hidden, cfg.mlp_ratio * cfg.hidden, cfg.experts, capacity(cfg), \
        cfg.group_size
    G = batch * cfg.seq // Sg
    with b.scope("moe"):
        wg = b.param(p + ".wg", [h, E])
        wi = b.param(p + ".wi", [E, h, F_])
        wo = b.param(p + ".wo", [E, F_, h])
        xg = b.reshape(x, [G, Sg, h])
        gates = b.op("Softmax", [b.op("MatMul", [xg, wg])], axis=-1)
        top_val, top_idx = b.op("TopK", [gates, b.ints([2])], n_out=2, axis=-1, largest=1,
                                sorted=1)
        i64 = TensorProto.INT64
        first, second = b.scalar(0, i64), b.scalar(1, i64)
        onehot_values = b.ints([0, 1])

        def one_hot(idx, depth):
            oh = b.op("OneHot", [idx, b.scalar(depth, i64), onehot_values], axis=-1)
            return b.op("Cast", [oh], to=TensorProto.FLOAT)

        m1 = one_hot(b.op("Gather", [top_idx, first], axis=2), E)      # [G, Sg, E]
        m2 = one_hot(b.op("Gather", [top_idx, second], axis=2), E)
        seq_axis = b.scalar(1, TensorProto.INT32)
        pos1 = b.op("Sub", [b.op("CumSum", [m1, seq_axis]), m1])
        pos2 = b.op("Sub", [b.op("CumSum", [m2, seq_axis]), m2])
        pos2 = b.op("Add", [pos2, b.op("ReduceSum", [m1, b.ints([1])], keepdims=1)])
        cap = b.scalar(float(C))
        keep1 = b.op("Mul", [m1, b.op("Cast", [b.op("Less", [pos1, cap])], to=TensorProto.FLOAT)])
        keep2 = b.op("Mul", [m2, b.op("Cast", [b.op("Less", [pos2, cap])], to=TensorProto.FLOAT)])

        def slot(pos, keep):  # one-hot of each token's position inside its expert, [G, Sg, C]
            rank = b.op("ReduceSum", [b.op("Mul", [pos, keep]), b.ints([-1])], keepdims=0)
            return one_hot(b.op("Cast", [rank], to=i64), C)

        slot1, slot2 = slot(pos1, keep1), slot(pos2, keep2)
        d1 = b.op("Mul", [b.op("Unsqueeze", [keep1, b.ints([-1])]),
                          b.op("Unsqueeze", [slot1, b.ints([-2])])])     # [G, Sg, E, C]
        d2 = b.op("Mul", [b.op("Unsqueeze", [keep2, b.ints([-1])]),
                          b.op("Unsqueeze", [slot2, b.ints([-2])])])
        g1 = b.op("Gather", [top_val, first], axis=2)
        g2 = b.op("Gather", [top_val, second], axis=2)
        denom = b.op("Add", [g1, g2])
        g1 = b.op("Unsqueeze", [b.op("Div", [g1, denom]), b.ints([-1, -2])])
        g2 = b.op("Unsqueeze", [b.op("Div", [g2, denom]), b.ints([-1, -2])])
        dispatch = b.op("Add", [d1, d2])
        combine = b.op("Add", [b.op("Mul", [g1, d1]), b.op("Mul", [g2, d2])])
        xe = b.op("Einsum", [dispatch, xg], equation="gsec,gsm->egcm")   # [E, G, C, h]
        he = b.gelu(b.op("Einsum", [xe, wi], equation="egcm,emf->egcf"))
        ye = b.op("Einsum", [he, wo], equation="egcf,efm->egcm")
        y = b.op("Einsum", [combine, ye], equation="gsec,egcm->gsm")     # [G, Sg, h]
        me = b.op("ReduceMean", [gates], axes=[1], keepdims=0)
        ce = b.op("ReduceMean", [m1], axes=[1], keepdims=0)
        aux = b.op("ReduceMean", [b.op("Mul", [me, ce])], keepdims=0)
        aux = b.op("Mul", [aux, b.scalar(float(E * E))])
        y = b.dropout(b.reshape(y, [batch, cfg.seq, h]), cfg.dropout)
        return y, aux


def build_shape_only(cfg: MoEConfig, batch: int) -> onnx.ModelProto:
    validate(cfg, batch)
    B, S, h, V = batch, cfg.seq, cfg.hidden, cfg.vocab
    b = GraphBuilder("moe")
    ids = b.input("input_ids", TensorProto.INT64, [B, S])
    labels = b.input("labels", TensorProto.INT64, [B, S])
    wte = b.param("wte.weight", [V, h])
    wpe = b.param("wpe.weight", [S, h])
    with b.scope("wte"):
        tok = b.op("Gather", [wte, ids])
    with b.scope("wpe"):
        pos = b.op("Gather", [wpe, b.ints(range(S))])
    x = b.dropout(b.op("Add", [tok, pos]), cfg.dropout)
    aux_total = None
    for i in range(cfg.layers):
        p = f"blocks.{i}"
        with b.scope(p):
            a = gpt.causal_attention(b, b.layer_norm(x, p + ".ln1", h, cfg.ln_eps), p + ".attn",
                                     B, S, h, cfg.heads, cfg.dropout)
            x = b.op("Add", [x, a])
            y = b.layer_norm(x, p + ".ln2", h, cfg.ln_eps)
            if is_moe_layer(cfg, i):
                y, aux = _moe_layer(b, y, p + ".moe", cfg, B)
                aux_total = aux if aux_total is None else b.op("Add", [aux_total, aux])
            else:
                y = gpt.mlp(b, y, p + ".mlp", h, cfg.mlp_ratio * h, cfg.dropout)
            x = b.op("Add", [x, y])
    x = b.layer_norm(x, "ln_f", h, cfg.ln_eps)
    if cfg.tie_embeddings:
        logits = b.op("MatMul", [x, b.op("Transpose", [wte], perm=[1, 0])])
    else:
        logits = b.linear(x, "lm_head", h, V, bias=False)
    loss = b.cross_entropy(b.reshape(logits, [B * S, V]), b.reshape(labels, [B * S]))
    if aux_total is not None and cfg.aux_loss_coef:
        loss = b.op("Add", [loss, b.op("Mul", [b.scalar(float(cfg.aux_loss_coef)), aux_total])])
    return b.build(loss, doc=f"MoE {cfg}")
