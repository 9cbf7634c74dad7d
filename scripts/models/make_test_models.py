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
  gpt_test_shapeonly.onnx, bert_test_shapeonly.onnx, moe_test_shapeonly.onnx,
  wresnet_test_shapeonly.onnx
      the shape-only builders at test size (initializers with dims and no data).
Bad inputs (see the comments at each writer below):
  truncated.onnx, not_onnx.onnx, unsupported.onnx, dynamic_unbound.onnx, shape_mismatch.onnx
"""
from __future__ import annotations

import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import numpy as np  # noqa: E402
import onnx  # noqa: E402
from onnx import TensorProto, helper  # noqa: E402

from common import OPSET  # noqa: E402
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
    for family in ("gpt", "bert", "moe", "wresnet"):
        generate(family, "test", os.path.join(outdir, f"{family}_test_shapeonly.onnx"),
                 mode="shape-only")
    write_truncated(outdir)
    write_not_onnx(outdir)
    write_unsupported(outdir)
    write_dynamic_unbound(outdir)
    write_shape_mismatch(outdir)
    print(f"make_test_models: wrote {outdir} in {time.time() - start:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
