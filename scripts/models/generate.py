#!/usr/bin/env python3
"""Writes one benchmark model as ONNX plus a JSON sidecar.

  generate.py FAMILY SIZE -o OUT.onnx [--batch B] [--seq S] [--dropout P]
              [--shape-only | --weights] [--static-batch] [--seed N] [--FIELD VALUE ...]

FAMILY is gpt, bert, moe or wresnet; SIZE a preset (see --list). Any config field can be
overridden (--layers, --hidden, --heads, --vocab, --experts, --group-size, --channels, --width,
--image, --classes, --stage-blocks 1,1,1,1, --tie-embeddings false, ...).

By default a model under 50M parameters is exported by torch (training mode, opset 17, weights
included, dim 0 of every input named "batch" unless --static-batch); a larger one is written
shape-only with onnx.helper (static shapes, initializers carrying dims and no data).
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time
import typing

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import onnx  # noqa: E402

import bert  # noqa: E402
import gpt  # noqa: E402
import moe  # noqa: E402
import wresnet  # noqa: E402
from common import (TORCH_EXPORT_LIMIT, check_op_vocabulary, check_static_shapes,  # noqa: E402
                    config_dict, op_histogram, torch_buffer_count, torch_export,
                    torch_param_count, write_sidecar)

FAMILIES = {"gpt": gpt, "bert": bert, "moe": moe, "wresnet": wresnet}
CONFIGS = {"gpt": gpt.GPTConfig, "bert": bert.BertConfig, "moe": moe.MoEConfig,
           "wresnet": wresnet.WResNetConfig}
# Flags that name a differently called field in one family.
ALIASES = {"wresnet": {"layers": "depth"}}
DTYPE_NAMES = {onnx.TensorProto.INT64: "int64", onnx.TensorProto.FLOAT: "float32"}


def _parse_bool(text: str) -> bool:
    t = text.strip().lower()
    if t in ("1", "true", "yes", "on"):
        return True
    if t in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"not a boolean: {text!r}")


def _parse_ints(text: str) -> tuple:
    try:
        return tuple(int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a comma-separated list of integers: {text!r}")


def _field_types() -> typing.Dict[str, typing.Callable]:
    """Every config field of every family -> an argparse type."""
    out = {}
    for cls in CONFIGS.values():
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            t = hints[f.name]
            if t is bool:
                out[f.name] = _parse_bool
            elif t in (int, float):
                out[f.name] = t
            else:  # Optional[Tuple[int, ...]]
                out[f.name] = _parse_ints
    return out


def make_config(family: str, size: str, overrides: typing.Dict[str, object]):
    module = FAMILIES[family]
    if size not in module.PRESETS:
        raise SystemExit(f"generate.py: unknown {family} size {size!r}; presets: "
                         + ", ".join(module.PRESETS))
    cfg = module.PRESETS[size]
    names = {f.name for f in dataclasses.fields(cfg)}
    changes = {}
    for key, value in overrides.items():
        key = ALIASES.get(family, {}).get(key, key)
        if key not in names:
            raise SystemExit(f"generate.py: --{key.replace('_', '-')} does not apply to {family} "
                             f"(its fields: {', '.join(sorted(names))})")
        changes[key] = value
    if family == "wresnet" and "depth" in changes and "stage_blocks" not in changes:
        changes["stage_blocks"] = None  # block counts follow the new depth
    return dataclasses.replace(cfg, **changes)


def generate(family: str, size: str, output: str, batch: typing.Optional[int] = None,
             mode: str = "auto", static_batch: bool = False, seed: int = 0,
             overrides: typing.Optional[dict] = None, quiet: bool = False) -> dict:
    """Writes `output` and its sidecar; returns the sidecar's content.

    mode: "auto" (torch under 50M parameters, else shape-only), "torch" or "shape-only".
    """
    module = FAMILIES[family]
    cfg = make_config(family, size, overrides or {})
    batch = batch if batch is not None else module.default_batch(size)
    if batch <= 0:
        raise SystemExit("generate.py: --batch must be positive")
    if family == "moe":
        try:
            module.validate(cfg, batch)
        except ValueError as e:
            raise SystemExit(f"generate.py: {e}")
    expected_params = module.param_count(cfg)
    expected_buffers = module.buffer_count(cfg)
    if mode == "auto":
        mode = "torch" if expected_params < TORCH_EXPORT_LIMIT else "shape-only"
    os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
    start = time.time()
    if mode == "torch":
        import torch
        torch.manual_seed(seed)
        model = module.make_model(cfg)
        generator = torch.Generator().manual_seed(seed)
        inputs = module.example_inputs(cfg, batch, generator)
        proto = torch_export(model, inputs, output, static_batch=static_batch)
        params, buffers = torch_param_count(model), torch_buffer_count(model)
        if (params, buffers) != (expected_params, expected_buffers):
            raise RuntimeError(f"{family} {size}: torch counts ({params}, {buffers}) differ from "
                               f"the formula ({expected_params}, {expected_buffers})")
        dynamic = not static_batch
    elif mode == "shape-only":
        proto = module.build_shape_only(cfg, batch)
        props = {p.key: int(p.value) for p in proto.metadata_props}
        params, buffers = props["param_count"], props["buffer_count"]
        if (params, buffers) != (expected_params, expected_buffers):
            raise RuntimeError(f"{family} {size}: shape-only counts ({params}, {buffers}) differ "
                               f"from the formula ({expected_params}, {expected_buffers})")
        check_static_shapes(proto)
        onnx.save(proto, output)
        dynamic = False
    else:
        raise ValueError(mode)
    check_op_vocabulary(proto, output)
    elapsed = time.time() - start

    meta = {
        "family": family,
        "size": size,
        "config": config_dict(cfg),
        "batch": batch,
        "seq": getattr(cfg, "seq", None),
        "mode": mode,
        "param_count": params,
        "buffer_count": buffers,
        "dynamic_batch": dynamic,
        "opset": 17,
        "inputs": [{"name": n, "shape": s, "dtype": DTYPE_NAMES[t]}
                   for n, t, s in module.input_specs(cfg, batch)],
        "op_histogram": op_histogram(proto),
        "nodes": len(proto.graph.node),
    }
    if family == "wresnet":
        meta["image"] = cfg.image
    write_sidecar(output, meta)
    if not quiet:
        print(f"{family} {size}: {mode}, {params:,} parameters, {buffers:,} buffer elements, "
              f"batch {batch}, {len(proto.graph.node)} nodes -> {output} "
              f"({os.path.getsize(output) / 1e6:.2f} MB, {elapsed:.2f} s)")
    return meta


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog=__doc__.split("\n\n", 1)[1])
    ap.add_argument("family", nargs="?", choices=sorted(FAMILIES))
    ap.add_argument("size", nargs="?")
    ap.add_argument("-o", "--output", help="OUT.onnx (the sidecar is OUT.json)")
    ap.add_argument("--batch", type=int, help="global batch (default: 4 for test sizes, else the "
                    "paper's: GPT/MoE 1024, BERT 256, WResNet 1536)")
    ap.add_argument("--dropout", type=float, help="dropout probability (default 0.0)")
    group = ap.add_mutually_exclusive_group()
    group.add_argument("--shape-only", action="store_true", help="always write shape-only")
    group.add_argument("--weights", action="store_true", help="always export with torch")
    ap.add_argument("--static-batch", action="store_true",
                    help="torch export without dynamic axes (reshape targets bake in the batch)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--list", action="store_true", help="list families, presets and counts")
    over = ap.add_argument_group("config overrides (the families each applies to)")
    for name, typ in sorted(_field_types().items()):
        if name == "dropout":
            continue
        fams = [f for f, cls in CONFIGS.items()
                if name in {x.name for x in dataclasses.fields(cls)}]
        fams += [f for f, alias in ALIASES.items() if name in alias]
        over.add_argument("--" + name.replace("_", "-"), dest="cfg_" + name, type=typ,
                          metavar=name.upper(), help=", ".join(fams))
    args = ap.parse_args(argv)

    if args.list:
        for fam, module in FAMILIES.items():
            for size, cfg in module.PRESETS.items():
                print(f"{fam:8s} {size:6s} {module.param_count(cfg):>16,d} params  {cfg}")
        return 0
    if not (args.family and args.size and args.output):
        ap.error("FAMILY, SIZE and -o OUT.onnx are required")
    overrides = {k[4:]: v for k, v in vars(args).items() if k.startswith("cfg_") and v is not None}
    if args.dropout is not None:
        overrides["dropout"] = args.dropout
    mode = "shape-only" if args.shape_only else "torch" if args.weights else "auto"
    generate(args.family, args.size, args.output, batch=args.batch, mode=mode,
             static_batch=args.static_batch, seed=args.seed, overrides=overrides)
    return 0


if __name__ == "__main__":
    sys.exit(main())
