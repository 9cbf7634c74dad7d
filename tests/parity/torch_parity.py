#!/usr/bin/env python3
"""Trains a small model with PyTorch and with alpa-run on the same data, and compares.

usage: torch_parity.py --alpa-run BIN --family gpt|bert|moe|wresnet --workdir DIR
                       [--optimizer sgd|adam|adamw] [--lr X] [--momentum M] [--weight-decay W]
                       [--steps 10] [--batch B] [--config JSON]

Well-conditioned settings matter: a tiny Wide-ResNet whose last stage is 1x1 with batch 4
(BatchNorm over 4 values) is chaotic — PyTorch's own float32 and float64 runs differ by 10%
after 10 steps — so the Wide-ResNet case uses batch 32 (lr 0.002), where they agree to 1e-7.

Checks (issue 3, tightened by issue 25): the loss at every step within LOSS_TOL relative, and
every parameter's and buffer's update since the initial values, p_t - p_0, at every step against
PyTorch's: ||Δ_alpa - Δ_torch|| <= UPDATE_TOL * ||Δ_torch|| per tensor (2-norms: Adam divides by
sqrt(v) + 1e-8, so an element whose gradient is near 1e-8 turns a rounding difference into a
large relative change of its own update; the norm weighs it by its share). An update that is
rounding noise in PyTorch too (a key bias: softmax ignores a constant added to every key, so its
gradient vanishes) is held to UPDATE_TOL of the model's largest update instead. Relative to the
update, not to the parameter: a zeroed gradient or a halved weight decay moves the update by far
more than the tolerance even where it moves the parameter by 1e-5 of its size. alpa-run runs once
per step count (its --save-params writes after the last step). Exits 1 on any mismatch, printing
every comparison.
"""
import argparse
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", "scripts", "models"))
import common  # noqa: E402  (the model generators)
import generate  # noqa: E402


def alpa_file_name(tensor_name: str) -> str:
    return tensor_name.replace("/", "_").replace("\\", "_").replace(":", "_") + ".npy"


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--alpa-run", required=True)
    ap.add_argument("--family", required=True)
    ap.add_argument("--workdir", required=True)
    ap.add_argument("--optimizer", default="sgd")
    ap.add_argument("--lr", type=float, default=0.05)
    ap.add_argument("--momentum", type=float, default=0.0)
    ap.add_argument("--weight-decay", type=float, default=0.0)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--config", default="{}", help="JSON overrides of the test-size config")
    ap.add_argument("--microbatches", type=int, default=1,
                    help="gradient accumulation; the PyTorch reference backpropagates loss/K per microbatch")
    args = ap.parse_args()

    torch.manual_seed(0)
    torch.set_num_threads(1)
    shutil.rmtree(args.workdir, ignore_errors=True)  # nothing an earlier run saved passes for this one's
    os.makedirs(args.workdir)
    module = generate.FAMILIES[args.family]
    cfg = generate.make_config(args.family, "test", json.loads(args.config))
    model = module.make_model(cfg)  # float32, as alpa-run's CPU backend
    onnx_path = os.path.join(args.workdir, "model.onnx")
    gen = torch.Generator().manual_seed(1)
    example = module.example_inputs(cfg, args.batch, gen)
    generate.torch_export(model, example, onnx_path)

    # Start both from exactly the exported initial values (tracing may touch buffers).
    inits = common.load_onnx_initializers(model, onnx_path)

    # Data: steps * batch samples, one .npy per input.
    data_dir = os.path.join(args.workdir, "data")
    os.makedirs(data_dir, exist_ok=True)
    batches = [module.example_inputs(cfg, args.batch, gen) for _ in range(args.steps)]
    for i, (name, _) in enumerate(example):
        np.save(os.path.join(data_dir, name + ".npy"), torch.cat([b[i][1] for b in batches]).numpy())

    params = dict(model.named_parameters())
    if args.optimizer == "sgd":
        opt = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=args.momentum,
                              weight_decay=args.weight_decay)
    elif args.optimizer == "adam":
        opt = torch.optim.Adam(model.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    else:
        opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    model.train()
    torch_losses, snapshots = [], {}
    for step in range(args.steps):
        opt.zero_grad()
        total = 0.0
        k = args.microbatches
        labels = dict(batches[step])["labels"]
        counted = lambda x: float((x != -100).sum())  # noqa: E731  (BERT's ignored labels)
        for m in range(k):
            chunk = [t[m * args.batch // k:(m + 1) * args.batch // k] for _, t in batches[step]]
            # The step's mean divides by the global count of counted labels (issue 3).
            loss = model(*chunk) * (counted(chunk[-1]) / counted(labels))
            loss.backward()
            total += loss.item()
        opt.step()
        torch_losses.append(total)
        snapshots[step + 1] = {k: v.detach().clone().numpy() for k, v in model.state_dict().items()
                               if v.is_floating_point()}

    ok = True
    alpa_losses = []
    for steps in sorted(snapshots):
        out = os.path.join(args.workdir, f"alpa_{steps}")
        cmd = [args.alpa_run, "--model", onnx_path, "--data", data_dir, "--steps", str(steps),
               "--batch", str(args.batch), "--microbatches", str(args.microbatches),
               "--optimizer", args.optimizer, "--lr", str(args.lr), "--momentum", str(args.momentum),
               "--weight-decay", str(args.weight_decay), "--metrics", out + ".jsonl",
               "--save-params", out]
        run = subprocess.run(cmd, capture_output=True, text=True)
        if run.returncode != 0:
            print(f"alpa-run failed ({run.returncode}): {' '.join(cmd)}\n{run.stderr}")
            return 1
        with open(out + ".jsonl") as f:
            alpa_losses = [json.loads(line)["loss"] for line in f]
        ok &= compare_updates(steps, out, snapshots[steps], inits)
    ok &= compare_losses(alpa_losses, torch_losses)
    print("PASS" if ok else "FAILED")
    return 0 if ok else 1


# fp32 against fp32 (PyTorch's kernels and ours sum in different orders), worst over the ten
# cases and ten steps: losses 3e-7 relative; updates 3e-5 under SGD, 6e-4 under Adam, whose
# update of an attention key bias (a gradient that vanishes: rounding noise, normalised to the
# learning rate by sqrt(v)) is noise in both. Against them: halving the weight decay moves
# gpt_adamw's updates by 5e-2 and bert_momentum_wd's by 0.5 (and its loss by 6e-5); a zeroed
# gradient moves its tensor's update by 1.
LOSS_TOL = 1e-5
UPDATE_TOL = 1e-3


def compare_losses(alpa_losses, torch_losses):
    print("losses alpa :", " ".join(f"{x:.7f}" for x in alpa_losses))
    print("losses torch:", " ".join(f"{x:.7f}" for x in torch_losses))
    rel = [abs(x - y) / max(abs(y), 1e-12) for x, y in zip(alpa_losses, torch_losses)]
    print("rel diff    :", " ".join(f"{r:.1e}" for r in rel))
    good = len(alpa_losses) == len(torch_losses) and max(rel) <= LOSS_TOL
    print(f"{'ok  ' if good else 'FAIL'} losses at every step: worst {max(rel):.2e} (tol {LOSS_TOL})")
    return good


def compare_updates(steps, out, ref, inits):
    """Each tensor's update p_t - p_0 after `steps` steps against PyTorch's."""
    deltas, ok = {}, True
    for name, after in ref.items():
        path = os.path.join(out, alpa_file_name(name))
        if not os.path.exists(path):
            if name in inits:  # exported but not saved: a bug
                print(f"FAIL {name}: not written by alpa-run")
                ok = False
            continue
        if name not in inits:
            continue  # a buffer the export does not carry (num_batches_tracked is not floating)
        p0 = inits[name].astype(np.float64)
        deltas[name] = (np.load(path).astype(np.float64) - p0, after.astype(np.float64) - p0)
    largest = max(float(np.linalg.norm(t)) for _, t in deltas.values())
    worst = (0.0, "")
    for name, (a, t) in deltas.items():
        size = float(np.linalg.norm(t))
        scale = max(size, UPDATE_TOL * largest)
        err = float(np.linalg.norm(a - t)) / max(scale, 1e-30)
        if err > UPDATE_TOL:
            print(f"FAIL {name} after step {steps}: ||Δa - Δt|| / ||Δt|| = {err:.2e} (update {size:.2e})")
            ok = False
        worst = max(worst, (err, name))
    print(f"{'ok  ' if ok else 'FAIL'} updates after step {steps}: {len(deltas)} tensors, worst {worst[1]} {worst[0]:.2e}"
          f" (tol {UPDATE_TOL})")
    return ok


if __name__ == "__main__":
    sys.exit(main())
