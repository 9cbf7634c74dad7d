#!/usr/bin/env python3
"""Checks that each shape-only builder writes the same architecture as its torch module.

For every family, at test size and at a variant whose dims are all distinct (so that a wrong
transpose cannot hide behind equal sizes):
  * the shape-only parameter count (sum of the dims' products of the FLOAT initializers that are
    torch parameters) equals sum(p.numel() for p in module.parameters()), and every parameter and
    buffer has torch's state_dict name and shape;
  * the torch export and the shape-only model pass onnx.checker.check_model (the shape-only one
    after its data-less initializers are zero-filled: the checker demands a data field), and the
    shape-only one passes strict ONNX shape inference with a scalar loss;
  * both graphs use only the supported operators;
  * the loss computed by a reference evaluator (onnx_eval.py) on the torch export, and on the
    shape-only graph filled with the module's weights, equals the module's own loss.
Then every paper preset is built shape-only and checked (counts against the formula, strict shape
inference, operators). Prints the operator histograms; exits 1 on any mismatch.

  check_shape_only.py [--skip-presets]
"""
from __future__ import annotations

import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import onnx  # noqa: E402
import torch  # noqa: E402

import bert  # noqa: E402
import gpt  # noqa: E402
import moe  # noqa: E402
import onnx_eval  # noqa: E402
import wresnet  # noqa: E402
from common import (check_static_shapes, disallowed_ops, fill_shape_only,  # noqa: E402
                    initializer_counts, op_histogram, torch_buffer_count, torch_export,
                    torch_param_count)

FAMILIES = {"gpt": gpt, "bert": bert, "moe": moe, "wresnet": wresnet}

# Small configs whose dims differ from each other (and from the test presets').
VARIANTS = {
    "gpt": (gpt.GPTConfig(vocab=97, seq=12, hidden=40, layers=3, heads=5), 3),
    "bert": (bert.BertConfig(vocab=101, seq=12, hidden=40, layers=3, heads=5, type_vocab=3), 3),
    # capacity_factor 0.5 makes C = 6 < tokens routed per expert: overflow tokens are dropped.
    "moe": (moe.MoEConfig(vocab=101, seq=12, hidden=40, layers=4, heads=5, experts=3,
                          group_size=18, capacity_factor=0.5, mlp_ratio=3,
                          tie_embeddings=False), 3),
    "wresnet": (wresnet.WResNetConfig(depth=20, channels=6, width=3, image=40, classes=7,
                                      stage_blocks=(2, 1, 2, 1)), 3),
}


class Checker:
    def __init__(self):
        self.failures = []

    def expect(self, ok: bool, what: str) -> bool:
        if not ok:
            self.failures.append(what)
            print("  FAIL:", what)
        return ok


def randomize(model) -> None:
    """Large random weights, so that the loss is sensitive to every op (the modules' own init
    of std 0.02 leaves attention nearly uniform and would hide a wrong transpose)."""
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() >= 2:
                p.copy_(torch.randn(p.shape, generator=g) * 0.3)
            elif name.endswith("weight"):  # LayerNorm / BatchNorm scales
                p.copy_(1.0 + 0.2 * torch.randn(p.shape, generator=g))
            else:
                p.copy_(0.2 * torch.randn(p.shape, generator=g))


def check_family(c: Checker, family: str, cfg, batch: int, tmp: str, label: str) -> dict:
    module = FAMILIES[family]
    torch.manual_seed(0)
    model = module.make_model(cfg)
    randomize(model)
    inputs = module.example_inputs(cfg, batch, torch.Generator().manual_seed(0))
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    params = dict(model.named_parameters())
    buffers = {k: b for k, b in model.named_buffers() if b.is_floating_point()}
    with torch.no_grad():
        loss_torch = float(model(*[t for _, t in inputs]))

    path = os.path.join(tmp, f"{family}_{label}.onnx")
    exported = torch_export(model, inputs, path)
    shape_only = module.build_shape_only(cfg, batch)
    name = f"{family} {label}"

    # Counts and names.
    n_torch = torch_param_count(model)
    n_so, n_so_buffers = initializer_counts(shape_only, params.keys())
    c.expect(n_so == n_torch, f"{name}: shape-only parameters {n_so} != torch {n_torch}")
    c.expect(n_so_buffers == torch_buffer_count(model),
             f"{name}: shape-only buffers {n_so_buffers} != torch {torch_buffer_count(model)}")
    c.expect(n_torch == module.param_count(cfg),
             f"{name}: formula {module.param_count(cfg)} != torch {n_torch}")
    floats = {i.name: tuple(i.dims) for i in shape_only.graph.initializer
              if i.data_type == onnx.TensorProto.FLOAT}
    expected = {k: tuple(v.shape) for k, v in {**params, **buffers}.items()}
    diff = sorted(set(floats.items()) ^ set(expected.items()))
    c.expect(not diff, f"{name}: initializer names/shapes differ from torch's: {diff[:6]}")
    c.expect(all(not i.raw_data and not i.float_data for i in shape_only.graph.initializer
                 if i.data_type == onnx.TensorProto.FLOAT),
             f"{name}: a shape-only FLOAT initializer carries data")

    # Validity.
    for what, m in (("torch export", exported), ("shape-only", fill_shape_only(shape_only))):
        try:
            onnx.checker.check_model(m, full_check=True)
        except Exception as e:  # noqa: BLE001
            c.expect(False, f"{name}: {what} fails onnx.checker: {e}")
        bad = disallowed_ops(m)
        c.expect(not bad, f"{name}: {what} uses unsupported operators {bad}")
    try:
        check_static_shapes(shape_only)
    except Exception as e:  # noqa: BLE001
        c.expect(False, f"{name}: shape-only fails strict shape inference: {e}")

    # Same function.
    feeds = dict(inputs)
    loss_export = float(onnx_eval.run(exported, feeds))
    loss_so = float(onnx_eval.run(shape_only, feeds, state))
    tol = 2e-5 * max(1.0, abs(loss_torch))
    c.expect(abs(loss_export - loss_torch) < tol,
             f"{name}: torch export loss {loss_export} != module loss {loss_torch}")
    c.expect(abs(loss_so - loss_torch) < tol,
             f"{name}: shape-only loss {loss_so} != module loss {loss_torch}")
    print(f"  {name:18s} params {n_torch:>10,d} (shape-only {n_so:,d})  "
          f"loss torch {loss_torch:.6f} export {loss_export:.6f} shape-only {loss_so:.6f}")
    return {"torch": op_histogram(exported), "shape-only": op_histogram(shape_only)}


def check_presets(c: Checker) -> None:
    for family, module in FAMILIES.items():
        for size, cfg in module.PRESETS.items():
            start = time.time()
            m = module.build_shape_only(cfg, module.default_batch(size))
            props = {p.key: int(p.value) for p in m.metadata_props}
            c.expect(props["param_count"] == module.param_count(cfg),
                     f"{family} {size}: builder {props['param_count']} != formula")
            c.expect(props["buffer_count"] == module.buffer_count(cfg),
                     f"{family} {size}: builder buffers {props['buffer_count']} != formula")
            c.expect(not disallowed_ops(m), f"{family} {size}: {disallowed_ops(m)}")
            try:
                check_static_shapes(m)
            except Exception as e:  # noqa: BLE001
                c.expect(False, f"{family} {size}: strict shape inference: {e}")
            print(f"  {family:8s} {size:5s} {props['param_count']:>16,d} params "
                  f"{len(m.graph.node):5d} nodes  {time.time() - start:.2f} s")


def main(argv) -> int:
    c = Checker()
    histograms = {}
    with tempfile.TemporaryDirectory() as tmp:
        print("test sizes and distinct-dim variants:")
        for family, module in FAMILIES.items():
            histograms[family] = check_family(c, family, module.PRESETS["test"],
                                              module.default_batch("test"), tmp, "test")
            cfg, batch = VARIANTS[family]
            check_family(c, family, cfg, batch, tmp, "variant")
    print("operator histograms at test size (torch export | shape-only):")
    for family, h in histograms.items():
        print(f"  {family}:")
        for op in sorted(set(h["torch"]) | set(h["shape-only"])):
            print(f"    {op:24s} {h['torch'].get(op, 0):4d} | {h['shape-only'].get(op, 0):4d}")
    if "--skip-presets" not in argv:
        print("paper presets (shape-only):")
        check_presets(c)
    if c.failures:
        print(f"check_shape_only: {len(c.failures)} failure(s)")
        return 1
    print("check_shape_only: all checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
