#!/usr/bin/env python3
"""`mpirun -np 2 alpa-plan profile` (issue 18): the profile it writes, its use by search, and the
refusals.

usage: profile_test.py --bin DIR --models DIR --workdir DIR

Checks: the profile of gpt_test on 2 ranks validates against schemas/profile.schema.json; it
holds a float32 table for every kernel the model's training step runs that the cost model looks
up (MatMul, Softmax, LayerNormalization, the SGD update, ...), with positive times growing with
size for MatMul, and all four collectives over 2 ranks with message sizes from 1 KiB up to the
--max-message-bytes given; it records how it was measured (ranks, BLAS threads, models); search
with it writes a plan whose estimate differs from the datasheet plan's and which alpa-run runs
(and refuses, saying why, without the profile or with it for the datasheet plan);
a profile from this cluster is refused for another device kind, a --cluster naming more devices
than the job has and a non-local cluster are refused (exit 2, naming the flag). Exits 1 on any
failure, printing every check.
"""
import argparse
import json
import os
import shutil
import subprocess
import sys

MPI = ["mpirun", "--allow-run-as-root", "--oversubscribe", "--bind-to", "none", "-x", "OPENBLAS_NUM_THREADS"]
ENV = dict(os.environ, OPENBLAS_NUM_THREADS="1", OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")
FAILED = []
HERE = os.path.dirname(os.path.abspath(__file__))


def check(ok, what):
    print(("ok   " if ok else "FAIL ") + what, flush=True)
    if not ok:
        FAILED.append(what)
    return ok


def run(cmd):
    return subprocess.run(cmd, capture_output=True, text=True, env=ENV, timeout=300)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", required=True)
    ap.add_argument("--models", required=True)
    ap.add_argument("--workdir", required=True)
    a = ap.parse_args()
    shutil.rmtree(a.workdir, ignore_errors=True)
    os.makedirs(a.workdir)
    plan_bin, run_bin = os.path.join(a.bin, "alpa-plan"), os.path.join(a.bin, "alpa-run")
    model = os.path.join(a.models, "gpt_test.onnx")
    prof = os.path.join(a.workdir, "profile.json")
    r = run(MPI + ["-np", "2", plan_bin, "profile", "--model", model, "--batch", "8", "--cluster", "local:2",
                   "--optimizer", "sgd", "--max-message-bytes", "65536", "-o", prof])
    if not check(r.returncode == 0 and os.path.exists(prof), f"profile on 2 ranks: exit {r.returncode}"):
        print(r.stdout, r.stderr)
        return 1
    check("all_reduce over 2 ranks" in r.stdout and "busbw" in r.stdout, "prints the collectives as nccl-tests tables")
    s = run([sys.executable, os.path.join(HERE, "..", "..", "scripts", "check_schema.py"),
             os.path.join(HERE, "..", "..", "schemas", "profile.schema.json"), prof])
    check(s.returncode == 0, "the profile validates against schemas/profile.schema.json " + s.stdout.strip()[:200])
    p = json.load(open(prof))
    check(p["device_kind"] == "cpu" and p["measured"]["ranks"] == "2" and p["measured"]["blas_threads"] == "1"
          and "gpt_test.onnx" in p["measured"]["models"], f"records how it was measured: {p['measured']}")
    kernels = {k["op"]: k for k in p["kernels"] if k["dtype"] == "float32"}
    want = {"MatMul", "Softmax", "LayerNormalization", "Gather", "alpa.SgdUpdate", "alpa.SoftmaxGrad", "Transpose"}
    check(want <= set(kernels), f"kernel tables for {sorted(want)}; has {sorted(kernels)}")
    mm = kernels.get("MatMul", {"points": []})["points"]
    # Per-device batches 8 (one rank) and 4 (split over 2): the model's MatMuls at both sizes.
    check(len(mm) >= 4 and all(t > 0 for _, t in mm) and mm[-1][1] > mm[0][1],
          f"MatMul: {len(mm)} sizes, {mm[0][1] * 1e6:.1f} us to {mm[-1][1] * 1e6:.1f} us" if mm else "MatMul: no points")
    colls = {(c["kind"], c["group_size"]): c for c in p["collectives"]}
    kinds = ["all_reduce", "all_gather", "reduce_scatter", "all_to_all"]
    check(all((k, 2) in colls for k in kinds), f"collective tables over 2 ranks: {sorted(colls)}")
    sizes = [x for x, _ in colls.get(("all_reduce", 2), {"points": []})["points"]]
    check(sizes and sizes[0] == 1024 and sizes[-1] == 65536 and len(sizes) == 7, f"all_reduce sizes {sizes}")

    plans = {}
    for name, extra in (("profiled", ["--profile", prof]), ("datasheet", [])):
        out = os.path.join(a.workdir, name + ".json")
        r = run([plan_bin, "search", model, "--batch", "8", "--cluster", "local:2", "--method", "data", "--optimizer", "sgd",
                 "--precision", "fp32", "-o", out, *extra])
        if check(r.returncode == 0, f"search --method data with the {name} costs: exit {r.returncode}"):
            plans[name] = json.load(open(out))["estimate"]["iteration_time_s"]
    check(len(plans) == 2 and plans["profiled"] != plans["datasheet"], f"the estimates differ: {plans}")
    r = run(MPI + ["-np", "2", run_bin, "--plan", os.path.join(a.workdir, "profiled.json"), "--model", model, "--steps", "2",
                   "--profile", prof])
    check(r.returncode == 0, f"alpa-run runs the profiled plan: exit {r.returncode} {r.stderr.strip()[-200:]}")

    r = run(MPI + ["-np", "2", run_bin, "--plan", os.path.join(a.workdir, "profiled.json"), "--model", model, "--steps", "1"])
    check(r.returncode == 2 and "--profile" in r.stderr, "the profiled plan without --profile: exit 2, " + r.stderr.strip()[:200])
    r = run(MPI + ["-np", "2", run_bin, "--plan", os.path.join(a.workdir, "datasheet.json"), "--model", model, "--steps", "1",
                   "--profile", prof])
    check(r.returncode == 2 and "not searched with --profile" in r.stderr,
          "the datasheet plan with a --profile: exit 2, " + r.stderr.strip()[:200])
    r = run([plan_bin, "search", model, "--batch", "8", "--cluster", "builtin:p3.16xlarge:1", "--method", "data",
             "--profile", prof, "-o", os.path.join(a.workdir, "x.json")])
    check(r.returncode == 2 and "device_kind" in r.stderr and prof in r.stderr,
          "a CPU profile for a V100 cluster: exit 2, " + r.stderr.strip()[:160])
    r = run(MPI + ["-np", "2", plan_bin, "profile", "--model", model, "--batch", "8", "--cluster", "local:4", "-o",
                   os.path.join(a.workdir, "y.json")])
    check(r.returncode == 2 and "mpirun -np 4" in r.stderr, "--cluster local:4 under 2 ranks: exit 2, " + r.stderr.strip()[:160])
    r = run([plan_bin, "profile", "--model", model, "--batch", "8", "--cluster", "builtin:dgx-a100:1", "-o",
             os.path.join(a.workdir, "z.json")])
    check(r.returncode == 2 and "local:N" in r.stderr, "a GPU cluster: exit 2, " + r.stderr.strip()[:160])
    check(not os.path.exists(os.path.join(a.workdir, "y.json")) and not os.path.exists(os.path.join(a.workdir, "z.json")),
          "nothing written by a refused profile")
    if FAILED:
        print(f"{len(FAILED)} check(s) failed")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
