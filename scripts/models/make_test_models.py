#!/usr/bin/env python3
"""Writes the models the C++ tests read into OUTDIR (the ctest fixture `generate_test_models`).

  make_test_models.py OUTDIR

Good models (each with its OUT.json sidecar, see generate.py):
  gpt_test.onnx, bert_test.onnx, moe_test.onnx, wresnet_test.onnx
      torch exports at test size with weights and a dynamic batch (dim 0 named "batch");
      GPT ties wte to the output projection and reads a float causal-mask buffer per block;
      WResNet has BatchNormalization in training mode.
  gpt_test_static.onnx
      the same GPT exported without dynamic axes: the attention Reshape targets bake in batch 4.
  gpt_test_dropout.onnx
      the same GPT with dropout 0.1 (the distributed runs' masks must equal one device's).
  gpt_test_vocab510.onnx
      the same GPT with a vocabulary of 510 (not divisible by 4: uneven shards, padded).
  gpt_test_shapeonly.onnx, bert_test_shapeonly.onnx, moe_test_shapeonly.onnx,
  wresnet_test_shapeonly.onnx
      the shape-only builders at test size (initializers with dims and no data).
  transformer_layers_test.onnx, moe16_test.onnx
      the models of the paper-outcome tests (tests/intra_op/paper_outcomes_test.cc): a stack of
      two BERT layers on a float input, and the MoE LM with 16 experts (see main and the writer).
Bad inputs (see the comments at each writer below):
  truncated.onnx, not_onnx.onnx, unsupported.onnx, dynamic_unbound.onnx, shape_mismatch.onnx
"""
from __future__ import annotations

import math
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import numpy as np  # noqa: E402
import onnx  # noqa: E402
from onnx import TensorProto, helper  # noqa: E402

from common import OPSET, torch_export  # noqa: E402
from generate import generate  # noqa: E402

FLOAT = TensorProto.FLOAT


def _model(nodes, inputs, initializers=(), name="bad") -> onnx.ModelProto:
    out = helper.make_tensor_value_info("loss", FLOAT, [])
    graph = helper.make_graph(nodes, name, inputs, [out], list(initializers))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              producer_name="alpa-plan make_test_models")
    model.ir_version = 8
    return model


def _weight(name, shape, seed):
    rng = np.random.default_rng(seed)
    return helper.make_tensor(name, FLOAT, shape,
                              rng.standard_normal(shape).astype(np.float32).reshape(-1).tolist())


def write_truncated(outdir: str) -> None:
    # truncated.onnx: the first half of gpt_test.onnx's bytes. Not a parseable protobuf: the
    # importer must report "is not a valid ONNX model", never crash.
    with open(os.path.join(outdir, "gpt_test.onnx"), "rb") as f:
        data = f.read()
    with open(os.path.join(outdir, "truncated.onnx"), "wb") as f:
        f.write(data[: len(data) // 2])


def write_not_onnx(outdir: str) -> None:
    # not_onnx.onnx: a text file with an .onnx name.
    with open(os.path.join(outdir, "not_onnx.onnx"), "w") as f:
        f.write("This is a text file, not an ONNX model.\nalpa-plan must reject it cleanly.\n")


def write_unsupported(outdir: str) -> None:
    # unsupported.onnx: a valid model whose loss path holds two operator types the planner does
    # not support, Hardmax (twice) and Det, between supported ones (MatMul, Relu, ReduceMean).
    # The importer lists both types, each with its first node:
    #   x[2,4,4] @ w[4,4] -> Hardmax -> Relu -> Hardmax -> Det [2] -> ReduceMean -> loss []
    x = helper.make_tensor_value_info("x", FLOAT, [2, 4, 4])
    nodes = [
        helper.make_node("MatMul", ["x", "w"], ["xw"], name="proj"),
        helper.make_node("Hardmax", ["xw"], ["h1"], name="first_hardmax", axis=-1),
        helper.make_node("Relu", ["h1"], ["r"], name="relu"),
        helper.make_node("Hardmax", ["r"], ["h2"], name="second_hardmax", axis=-1),
        helper.make_node("Det", ["h2"], ["d"], name="the_det"),
        helper.make_node("ReduceMean", ["d"], ["loss"], name="mean", keepdims=0),
    ]
    model = _model(nodes, [x], [_weight("w", [4, 4], 1)], "unsupported")
    onnx.checker.check_model(model)
    onnx.save(model, os.path.join(outdir, "unsupported.onnx"))


def write_dynamic_unbound(outdir: str) -> None:
    # dynamic_unbound.onnx: a valid model whose data input x has symbolic dims
    # ["batch", "seq", 8]. --batch binds "batch" (axis 0), nothing binds "seq" (axis 1), so the
    # importer must report that 'seq' is dynamic and --batch does not bind it.
    x = helper.make_tensor_value_info("x", FLOAT, ["batch", "seq", 8])
    nodes = [
        helper.make_node("MatMul", ["x", "w"], ["y"], name="proj"),
        helper.make_node("Relu", ["y"], ["r"], name="relu"),
        helper.make_node("ReduceMean", ["r"], ["loss"], name="mean", keepdims=0),
    ]
    model = _model(nodes, [x], [_weight("w", [8, 4], 2)], "dynamic_unbound")
    onnx.checker.check_model(model)
    onnx.save(model, os.path.join(outdir, "dynamic_unbound.onnx"))


def write_shape_mismatch(outdir: str) -> None:
    # shape_mismatch.onnx: valid protobuf and valid per onnx.checker (which does not infer
    # shapes), but MatMul 'proj' multiplies x [4,8] by w [5,3]: the contraction dims (8 vs 5)
    # disagree, and the importer must name the node and both shapes.
    x = helper.make_tensor_value_info("x", FLOAT, [4, 8])
    nodes = [
        helper.make_node("MatMul", ["x", "w"], ["y"], name="proj"),
        helper.make_node("ReduceMean", ["y"], ["loss"], name="mean", keepdims=0),
    ]
    model = _model(nodes, [x], [_weight("w", [5, 3], 3)], "shape_mismatch")
    onnx.checker.check_model(model)
    onnx.save(model, os.path.join(outdir, "shape_mismatch.onnx"))


def write_transformer_layers(outdir: str) -> None:
    # transformer_layers_test.onnx: Alpa's BERT-layer unit test model, two post-LayerNorm BERT
    # encoder layers (hidden 128, 4 heads, FFN 512) on a float input x [8, 8, 128] (batch 8,
    # seq 8), loss mean((out - y)^2) against a float label y. No embedding and no head, so every
    # weight is a layer weight. Kernels are [in, out] parameters used by plain MatMuls (no
    # Transpose in between), so a column split is "RS" on the kernel and a row split "SR":
    #   q, k, v: x @ wq + bq ...; attention output: a @ wo + bo; FFN: gelu(x @ w1 + b1) @ w2 + b2.
    import torch
    import torch.nn as nn
    import torch.nn.functional as F

    batch, seq, hidden, heads, inner, layers = 8, 8, 128, 4, 512, 2

    def kernel(n_in, n_out):
        return nn.Parameter(torch.randn(n_in, n_out) * 0.02)

    class Layer(nn.Module):
        def __init__(self):
            super().__init__()
            self.wq, self.wk, self.wv = (kernel(hidden, hidden) for _ in range(3))
            self.bq, self.bk, self.bv = (nn.Parameter(torch.zeros(hidden)) for _ in range(3))
            self.wo, self.bo = kernel(hidden, hidden), nn.Parameter(torch.zeros(hidden))
            self.ln1 = nn.LayerNorm(hidden)
            self.w1, self.b1 = kernel(hidden, inner), nn.Parameter(torch.zeros(inner))
            self.w2, self.b2 = kernel(inner, hidden), nn.Parameter(torch.zeros(hidden))
            self.ln2 = nn.LayerNorm(hidden)

        def forward(self, x):
            B, S, H = x.size()

            def split_heads(t):
                return t.view(B, S, heads, H // heads).transpose(1, 2)

            q = split_heads(x @ self.wq + self.bq)
            k = split_heads(x @ self.wk + self.bk)
            v = split_heads(x @ self.wv + self.bv)
            probs = F.softmax((q @ k.transpose(-2, -1)) / math.sqrt(H // heads), dim=-1)
            a = (probs @ v).transpose(1, 2).contiguous().view(B, S, H)
            x = self.ln1(x + a @ self.wo + self.bo)
            return self.ln2(x + F.gelu(x @ self.w1 + self.b1) @ self.w2 + self.b2)

    class Stack(nn.Module):
        def __init__(self):
            super().__init__()
            self.layers = nn.ModuleList([Layer() for _ in range(layers)])

        def forward(self, x, y):
            for layer in self.layers:
                x = layer(x)
            return ((x - y) ** 2).mean()

    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    inputs = [("x", torch.randn(batch, seq, hidden, generator=g)),
              ("y", torch.randn(batch, seq, hidden, generator=g))]
    torch_export(Stack(), inputs, os.path.join(outdir, "transformer_layers_test.onnx"))


def write_mlp(outdir: str) -> None:
    # mlp_test.onnx: two residual feed-forward blocks (hidden 64, inner 256) on a float input
    # x [8, 16, 64], loss mean((out - y)^2) against a float label y: the Megatron-LM MLP pattern
    # (a column-split first GEMM, a row-split second one, one activation all-reduce per block in
    # the forward and one in the backward) without attention or an embedding. Kernels are
    # [in, out] parameters used by plain MatMuls.
    import torch
    import torch.nn as nn
    import torch.nn.functional as F

    batch, seq, hidden, inner, blocks = 8, 16, 64, 256, 2

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.w1 = nn.Parameter(torch.randn(hidden, inner) * 0.05)
            self.b1 = nn.Parameter(torch.zeros(inner))
            self.w2 = nn.Parameter(torch.randn(inner, hidden) * 0.05)
            self.b2 = nn.Parameter(torch.zeros(hidden))

        def forward(self, x):
            return x + F.gelu(x @ self.w1 + self.b1) @ self.w2 + self.b2

    class Stack(nn.Module):
        def __init__(self):
            super().__init__()
            self.blocks = nn.ModuleList([Block() for _ in range(blocks)])

        def forward(self, x, y):
            for block in self.blocks:
                x = block(x)
            return ((x - y) ** 2).mean()

    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    inputs = [("x", torch.randn(batch, seq, hidden, generator=g)),
              ("y", torch.randn(batch, seq, hidden, generator=g))]
    torch_export(Stack(), inputs, os.path.join(outdir, "mlp_test.onnx"))


def write_mlp2d(outdir: str) -> None:
    # mlp2d_test.onnx: Linear(64, 256) -> ReLU -> Linear(256, 16) -> cross-entropy on a float input
    # x [16, 64] and integer labels y [16]. On 2-D inputs torch exports each Linear as a Gemm with
    # its bias: under Megatron-LM's pattern the second Gemm's contraction dim is split, so each
    # rank's partial sum carries a share of the bias.
    import torch
    import torch.nn as nn
    import torch.nn.functional as F

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc1 = nn.Linear(64, 256)
            self.fc2 = nn.Linear(256, 16)

        def forward(self, x, y):
            return F.cross_entropy(self.fc2(F.relu(self.fc1(x))), y)

    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    inputs = [("x", torch.randn(16, 64, generator=g)), ("y", torch.randint(0, 16, (16,), generator=g))]
    torch_export(Net(), inputs, os.path.join(outdir, "mlp2d_test.onnx"))


def main(argv) -> int:
    if len(argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    outdir = argv[1]
    os.makedirs(outdir, exist_ok=True)
    start = time.time()
    for family in ("gpt", "bert", "moe", "wresnet"):
        generate(family, "test", os.path.join(outdir, f"{family}_test.onnx"), mode="torch")
    generate("gpt", "test", os.path.join(outdir, "gpt_test_static.onnx"), mode="torch",
             static_batch=True)
    generate("gpt", "test", os.path.join(outdir, "gpt_test_dropout.onnx"), mode="torch",
             overrides={"dropout": 0.1})
    generate("gpt", "test", os.path.join(outdir, "gpt_test_vocab510.onnx"), mode="torch",
             overrides={"vocab": 510})
    for family in ("gpt", "bert", "moe", "wresnet"):
        generate(family, "test", os.path.join(outdir, f"{family}_test_shapeonly.onnx"),
                 mode="shape-only")
    # The MoE LM at test size with 16 experts, groups of 16 tokens and capacity factor 0.5 (one
    # slot per expert and group, as many slots as tokens), at batch 64: 64 groups, so the
    # data-parallel part of the plan has a batch to split. See the MoE test for why.
    generate("moe", "test", os.path.join(outdir, "moe16_test.onnx"), batch=64, mode="torch",
             overrides={"experts": 16, "group_size": 16, "capacity_factor": 0.5})
    write_transformer_layers(outdir)
    write_mlp(outdir)
    write_mlp2d(outdir)
    write_truncated(outdir)
    write_not_onnx(outdir)
    write_unsupported(outdir)
    write_dynamic_unbound(outdir)
    write_shape_mismatch(outdir)
    print(f"make_test_models: wrote {outdir} in {time.time() - start:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
