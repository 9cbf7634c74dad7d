#!/usr/bin/env python3
"""Every plan the planner offers either trains with gradients within the bound or is refused at
planning time (issue 16).

usage: plan_matrix_test.py --bin DIR --workdir DIR [--models gpt,bert,moe,wresnet,gpt_tied]
                           [--ranks 1,2,4,8] [--run-limit N]

For the four test families (gpt, bert, moe from scripts/models at batch 8, wresnet at 32) and a GPT
exported from standard PyTorch layers (tests/parity/torch_layers.py gpt_tied: tied embeddings,
a bool causal-mask buffer sliced and applied by masked_fill, batch 4), plans every method x rank
count x microbatch option x schedule `alpa-plan search` offers: data, zero2, zero3, shard,
auto, pp-dp and megatron (tp x pp x dp factorisations of the rank count, tp <= 2), with 1, 2
and 4 microbatches, 1F1B and GPipe for the pipelined methods. Each search must exit 0 (a plan
written) or 2 (refused with a message and no file: no fit, a configuration the model does not
allow, or a plan alpa-run cannot run, which search finds by lowering every rank's program);
never 3, never a crash.

Then written plans train one SGD step on MPI ranks (grad_check.Harness) and every parameter's
gradient must be within the float64 bound (PyTorch's float64 step with the plan's microbatches:
BatchNorm's statistics are a microbatch's): every pipeline of several stages on at most 4 ranks,
and one single-stage plan per family, method and rank count (up to --run-limit runs; plans on 8
ranks are planned only). Prints the counts.
"""
import argparse
import itertools
import os
import shutil
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "parity"))
import grad_check  # noqa: E402

PIPELINED = ("auto", "pp-dp", "megatron")
BATCH = {"gpt_tied": 4, "wresnet": 32}  # Wide-ResNet: BatchNorm over a microbatch of 8, well conditioned


def megatron_shapes(ranks):
    return [(tp, pp, ranks // (tp * pp)) for tp in (1, 2) for pp in (1, 2, 4)
            if tp * pp <= ranks and ranks % (tp * pp) == 0]


def specs(ranks, batch):
    """(label, harness plan spec) for every configuration on `ranks` local devices."""
    for method in ("data", "zero2", "zero3", "shard", "auto", "pp-dp", "megatron"):
        shapes = megatron_shapes(ranks) if method == "megatron" else [None]
        schedules = ("1f1b", "gpipe") if method in PIPELINED else (None,)
        for shape, mb, schedule in itertools.product(shapes, (1, 2, 4), schedules):
            if batch % mb:
                continue
            opts = [f"mb={mb}"]
            if shape:
                opts += [f"tp={shape[0]}", f"pp={shape[1]}", f"dp={shape[2]}"]
                if shape[1] > 2:
                    opts.append(f"layers={shape[1]}")  # the test models have 2 blocks
            if schedule:
                opts.append(f"schedule={schedule}")
            yield f"{method}:{ranks}:{','.join(opts)}"


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", required=True)
    ap.add_argument("--workdir", required=True)
    ap.add_argument("--models", default="gpt,bert,moe,wresnet,gpt_tied")
    ap.add_argument("--ranks", default="1,2,4,8")
    ap.add_argument("--run-limit", type=int, default=400)
    ap.add_argument("--lr", type=float, default=1e4)
    a = ap.parse_args()
    shutil.rmtree(a.workdir, ignore_errors=True)
    os.makedirs(a.workdir)
    planned = refused = runs = 0
    crashed, wrong = [], []
    reasons = {}
    for model in a.models.split(","):
        args = argparse.Namespace(bin=a.bin, model=model, workdir=os.path.join(a.workdir, model),
                                  batch=BATCH.get(model, 8), lr=a.lr)
        h = grad_check.Harness(args)
        h.set_bounds_from_one_device()
        ran_single = set()
        for ranks in (int(r) for r in a.ranks.split(",")):
            for spec in specs(ranks, args.batch):
                status, message, plan = h.plan(spec)
                if status == "refused" and message != "(no message)":
                    refused += 1
                    why = "alpa-run cannot run this plan" if "alpa-run cannot run" in message else message.split(": ")[-1][:70]
                    key = f"{model}: {why}"
                    reasons[key] = reasons.get(key, 0) + 1
                    continue
                if status != "planned":
                    crashed.append(f"{model} {spec}: {message}")
                    continue
                planned += 1
                stages = len(plan["pipeline"]["stages"]) if "pipeline" in plan else 1
                method = spec.split(":")[0]
                if ranks > 4 or runs >= a.run_limit or (stages == 1 and (method, ranks) in ran_single):
                    continue
                ran_single.add((method, ranks))
                runs += 1
                status, message = h.check(spec, quiet=True)
                if status != "ok":
                    wrong.append(f"{model} {spec} ({stages} stages): {message}")
    print(f"searched {planned + refused + len(crashed)} configurations: {planned} plans written, {refused} refused "
          f"(exit 2 with a reason), {len(crashed)} crashed or refused silently")
    for key, n in sorted(reasons.items(), key=lambda kv: -kv[1]):
        print(f"  refused {n:4d}: {key}")
    print(f"trained {runs} of the written plans for one step on MPI ranks: {runs - len(wrong)} with every gradient "
          f"within the float64 bound, {len(wrong)} failed or outside it")
    for f in crashed + wrong:
        print("FAIL", f)
    return 1 if crashed or wrong else 0


if __name__ == "__main__":
    sys.exit(main())
