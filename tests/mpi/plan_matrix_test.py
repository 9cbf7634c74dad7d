#!/usr/bin/env python3
"""Every plan the planner offers either runs or is refused at planning time (issue 16).

usage: plan_matrix_test.py --bin DIR --models DIR --workdir DIR [--ranks 1,2,4,8]
                           [--run-limit N]

For the four test families (gpt, bert, moe, wresnet from scripts/models) and a GPT exported from
standard PyTorch layers (tests/parity/torch_layers.py gpt_tied: tied embeddings, a bool causal
mask applied by masked_fill, batch 4), plans every method x rank count x microbatch option x
schedule `alpa-plan search` offers: data, zero2, zero3, shard, auto, pp-dp and megatron
(tp x pp x dp factorisations of the rank count), with 1, 2 and 4 microbatches, 1F1B and GPipe
for the pipelined methods. Each search must exit 0 (a plan written) or 2 (refused with a
message: no fit, a configuration the model does not allow, or a plan alpa-run cannot run);
never 3, never a crash.

Single-stage plans are lowered rank by rank by the search itself (planner/spmd/plan_check). The
lowering of pipelines of several stages is built by alpa-run at start-up, so every such plan on
at most 4 ranks is run here for one step under mpirun (and, up to --run-limit, the single-stage
plans too, one per family, method and rank count); each must exit 0. Prints the counts.
"""
import argparse
import itertools
import json
import os
import shutil
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "parity"))
sys.path.insert(0, os.path.join(HERE, "..", "..", "scripts", "models"))

MPI = ["mpirun", "--allow-run-as-root", "--oversubscribe", "--bind-to", "none",
       "--mca", "btl_vader_single_copy_mechanism", "none"]
ENV = dict(os.environ, OPENBLAS_NUM_THREADS="1", OMPI_MCA_rmaps_base_oversubscribe="1")
PIPELINED = ("auto", "pp-dp", "megatron")


def export_gpt_tied(workdir):
    import torch
    import common
    import torch_layers
    torch.manual_seed(0)
    model, inputs = torch_layers.make("gpt_tied", 4, torch.Generator().manual_seed(1))
    path = os.path.join(workdir, "gpt_tied.onnx")
    common.torch_export(model, inputs, path)
    return path


def megatron_shapes(ranks):
    return [(tp, pp, ranks // (tp * pp)) for tp in (1, 2, 4, 8) for pp in (1, 2, 4)
            if tp * pp <= ranks and ranks % (tp * pp) == 0 and tp <= 2]


def configurations(ranks):
    for method in ("data", "zero2", "zero3", "shard", "auto", "pp-dp", "megatron"):
        shapes = megatron_shapes(ranks) if method == "megatron" else [None]
        schedules = ("1f1b", "gpipe") if method in PIPELINED else (None,)
        for shape, mb, schedule in itertools.product(shapes, (1, 2, 4), schedules):
            yield method, shape, mb, schedule


def search(a, model, batch, ranks, method, shape, mb, schedule, out):
    cmd = [os.path.join(a.bin, "alpa-plan"), "search", model, "--batch", str(batch), "--cluster", f"local:{ranks}",
           "--method", method, "--optimizer", "sgd", "--precision", "fp32", "--microbatches", str(mb), "-o", out]
    if shape:
        cmd += ["--tp", str(shape[0]), "--pp", str(shape[1]), "--dp", str(shape[2])]
    if schedule:
        cmd += ["--schedule", schedule]
    if method == "megatron" and shape[1] > 2:
        cmd += ["--layers", str(shape[1])]  # the test models have 2 blocks
    return subprocess.run(cmd, capture_output=True, text=True, env=ENV, timeout=600)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", required=True)
    ap.add_argument("--models", required=True)
    ap.add_argument("--workdir", required=True)
    ap.add_argument("--ranks", default="1,2,4,8")
    ap.add_argument("--run-limit", type=int, default=200)
    a = ap.parse_args()
    shutil.rmtree(a.workdir, ignore_errors=True)
    os.makedirs(a.workdir)
    models = {f: (os.path.join(a.models, f"{f}_test.onnx"), 8) for f in ("gpt", "bert", "moe", "wresnet")}
    models["gpt_tied"] = (export_gpt_tied(a.workdir), 4)
    planned, refused, crashed, runs, run_failures = 0, 0, [], 0, []
    ran_single = set()
    reasons = {}
    for family, (model, batch) in models.items():
        for ranks in (int(r) for r in a.ranks.split(",")):
            for method, shape, mb, schedule in configurations(ranks):
                if batch % mb:
                    continue
                label = f"{family} local:{ranks} {method}{' tp%d pp%d dp%d' % shape if shape else ''} mb{mb}" \
                        f"{' ' + schedule if schedule else ''}"
                out = os.path.join(a.workdir, "plan.json")
                if os.path.exists(out):
                    os.remove(out)
                r = search(a, model, batch, ranks, method, shape, mb, schedule, out)
                if r.returncode == 2:
                    refused += 1
                    said = r.stderr.strip().splitlines()[-1] if r.stderr.strip() else ""
                    key = "alpa-run cannot run this plan" if "alpa-run cannot run" in said else said.split(": ")[-1][:60]
                    reasons[key] = reasons.get(key, 0) + 1
                    if not said or os.path.exists(out):
                        crashed.append(f"{label}: refused without a message or with a plan written")
                    continue
                if r.returncode != 0:
                    crashed.append(f"{label}: exit {r.returncode}: {r.stderr.strip()[-300:]}")
                    continue
                planned += 1
                with open(out) as f:
                    plan = json.load(f)
                stages = len(plan["pipeline"]["stages"]) if "pipeline" in plan else 1
                single_key = (family, method, ranks)
                if ranks > 4 or (stages == 1 and (single_key in ran_single or runs >= a.run_limit)):
                    continue
                ran_single.add(single_key)
                runs += 1
                cmd = [*MPI, "-np", str(ranks), os.path.join(a.bin, "alpa-run"), "--plan", out, "--model", model,
                       "--steps", "1"]
                rr = subprocess.run(cmd, capture_output=True, text=True, env=ENV, timeout=300)
                if rr.returncode != 0:
                    said = [l for l in (rr.stdout + rr.stderr).splitlines() if "error" in l or "rank" in l]
                    run_failures.append(f"{label} ({stages} stages): exit {rr.returncode}: {said[0] if said else ''}")
    print(f"searched {planned + refused + len(crashed)} configurations: {planned} plans written, {refused} refused "
          f"(exit 2 with a reason), {len(crashed)} crashed or silent")
    for key, n in sorted(reasons.items(), key=lambda kv: -kv[1]):
        print(f"  refused {n:4d}: {key}")
    print(f"ran {runs} of the written plans on MPI ranks for one step: {runs - len(run_failures)} ran, "
          f"{len(run_failures)} failed")
    for f in crashed + run_failures:
        print("FAIL", f)
    return 1 if crashed or run_failures else 0


if __name__ == "__main__":
    sys.exit(main())
