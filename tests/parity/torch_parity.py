#!/usr/bin/env python3
"""Trains a small model with PyTorch and with alpa-run on the same data, and compares.

usage: torch_parity.py --alpa-run BIN --family gpt|bert|moe|wresnet --workdir DIR
                       [--optimizer sgd|adam|adamw] [--lr X] [--momentum M] [--weight-decay W]
                       [--steps 10] [--batch B] [--config JSON]

Well-conditioned settings matter: a tiny Wide-ResNet whose last stage is 1x1 with batch 4
(BatchNorm over 4 values) is chaotic — PyTorch's own float32 and float64 runs differ by 10%
after 10 steps — so the Wide-ResNet case uses batch 32 (lr 0.002), where they agree to 1e-7.

Checks (issue 3): losses agree within 1e-4 relative at step 1 and 1e-3 at step 10, and every
parameter and buffer agrees after step 1 and after the last step:
max|Δ| <= 1e-4 * max|p| per tensor. Exits 1 on any mismatch, printing every comparison.
"""
import argparse
import json
import os
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
    os.makedirs(args.workdir, exist_ok=True)
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
        if step + 1 in (1, args.steps):
            snapshots[step + 1] = {k: v.detach().clone().numpy() for k, v in model.state_dict().items()
                                   if v.is_floating_point()}

    ok = True
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
        if steps > 1:
            print("losses alpa :", " ".join(f"{x:.6f}" for x in alpa_losses))
            print("losses torch:", " ".join(f"{x:.6f}" for x in torch_losses[:steps]))
            print("rel diff    :", " ".join(f"{abs(x - y) / abs(y):.1e}" for x, y in zip(alpa_losses, torch_losses)))
        for s in (1, steps):
            a, t = alpa_losses[s - 1], torch_losses[s - 1]
            tol = 1e-4 if s == 1 else 1e-3
            rel = abs(a - t) / max(abs(t), 1e-12)
            good = rel <= tol
            ok &= good
            print(f"{'ok  ' if good else 'FAIL'} loss step {s}: alpa {a:.8f} torch {t:.8f} rel {rel:.2e} (tol {tol})")
        worst = (0.0, "")
        for name, ref in snapshots[steps].items():
            path = os.path.join(out, alpa_file_name(name))
            if not os.path.exists(path):
                if name in inits:  # exported but not saved: a bug
                    print(f"FAIL {name}: not written by alpa-run")
                    ok = False
                continue
            got = np.load(path)
            scale = max(float(np.abs(ref).max()), 1e-12)
            err = float(np.abs(got.astype(np.float64) - ref.astype(np.float64)).max()) / scale
            if err > 1e-4:
                print(f"FAIL {name} after step {steps}: max|d|/max|p| = {err:.2e}")
                ok = False
            worst = max(worst, (err, name))
        print(f"{'ok  ' if worst[0] <= 1e-4 else 'FAIL'} params after step {steps}: worst {worst[1]} {worst[0]:.2e}")
    print("PASS" if ok else "FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
