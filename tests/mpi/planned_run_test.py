#!/usr/bin/env python3
"""`mpirun -np N alpa-run --plan ...` against one device, and its failure behaviour (issue 5).

usage:
  planned_run_test.py parity --bin DIR --model M.onnx --workdir DIR --np N [--method data]
                      [--batch B] [--microbatches K] [--logical-mesh D0xD1] [--cluster SPEC]
                      [--optimizer sgd] [--lr X] [--momentum M] [--steps 10]
                      [--hand-gpt] [--check-memory]
  planned_run_test.py errors --bin DIR --models DIR --workdir DIR

parity: plans the model with alpa-plan, trains it on one device (alpa-run, with the plan's
microbatches) and on N MPI ranks (alpa-run --plan) from the same seed and synthetic data, and
checks that
  - every step's loss agrees within 1e-5 relative,
  - every saved parameter and buffer agrees within 1e-5 relative (max|d| / max|p| per tensor),
  - the bytes the MPI communicator measured per step equal the plan's prediction exactly, per
    collective kind, and with --hand-gpt also a total computed by hand from the model's sidecar
    (independent of the planner): data parallelism all-reduces every parameter's gradient once,
    the tied embedding once per use (its two uses are reduced separately) and the scalar loss,
    2(n-1)/n * 4 * (param_count + vocab * hidden + 1) bytes,
  - with --check-memory, every rank's allocator high-water mark is within 10% + 1 MiB of the
    plan's peak estimate.
errors: wrong -np, a plan for another model, a plan for another cluster, a plan this version does
not execute, a pipeline plan (all: exit code 2 and a message on every rank), a rank that fails
during a step and a rank that is killed (every rank stops within 30 s, the failed rank named).
Exits 1 on any failure, printing every check.
"""
import argparse
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np

MPI_FLAGS = ["--allow-run-as-root", "--oversubscribe", "--bind-to", "none",
             "--mca", "btl_vader_single_copy_mechanism", "none"]
ENV = dict(os.environ, OPENBLAS_NUM_THREADS="1", OMPI_MCA_rmaps_base_oversubscribe="1")
FAILED = []


def check(ok, what):
    print(("ok   " if ok else "FAIL ") + what, flush=True)
    if not ok:
        FAILED.append(what)
    return ok


def run(cmd, timeout=300):
    start = time.time()
    r = subprocess.run(cmd, capture_output=True, text=True, env=ENV, timeout=timeout)
    r.seconds = time.time() - start
    return r


def plan(args_bin, model, out, cluster, method, batch, extra=()):
    cmd = [os.path.join(args_bin, "alpa-plan"), "search", model, "--batch", str(batch), "--cluster", cluster,
           "--method", method, "--precision", "fp32", "-o", out, *extra]
    r = run(cmd)
    if r.returncode != 0:
        print(f"alpa-plan failed ({r.returncode}): {' '.join(cmd)}\n{r.stdout}{r.stderr}")
        sys.exit(1)
    with open(out) as f:
        return json.load(f)


def mpirun(np_, args_bin, argv, timeout=300):
    return run(["mpirun", *MPI_FLAGS, "-np", str(np_), os.path.join(args_bin, "alpa-run"), *argv], timeout)


def metrics(path):
    with open(path) as f:
        return [json.loads(line) for line in f]


def parity(a):
    os.makedirs(a.workdir, exist_ok=True)
    cluster = a.cluster or f"local:{a.np}"
    extra = ["--optimizer", a.optimizer]
    if a.microbatches > 1:
        extra += ["--microbatches", str(a.microbatches)]
    if a.logical_mesh:
        extra += ["--logical-mesh", a.logical_mesh]
    plan_path = os.path.join(a.workdir, "plan.json")
    p = plan(a.bin, a.model, plan_path, cluster, a.method, a.batch, extra)
    train = ["--model", a.model, "--steps", str(a.steps), "--lr", str(a.lr), "--momentum", str(a.momentum),
             "--seed", "7"]
    ref_dir, dist_dir = os.path.join(a.workdir, "one"), os.path.join(a.workdir, "ranks")
    r = run([os.path.join(a.bin, "alpa-run"), *train, "--batch", str(a.batch), "--optimizer", a.optimizer,
             "--microbatches", str(a.microbatches), "--metrics", ref_dir + ".jsonl", "--save-params", ref_dir])
    if not check(r.returncode == 0, f"one device trains ({r.seconds:.1f} s)"):
        print(r.stderr)
        return
    extra_run = ["--allow-cluster-mismatch"] if a.cluster else []
    r = mpirun(a.np, a.bin, ["--plan", plan_path, *train, *extra_run, "--metrics", dist_dir + ".jsonl",
                             "--save-params", dist_dir])
    if not check(r.returncode == 0, f"{a.np} ranks train ({r.seconds:.1f} s)"):
        print(r.stdout, r.stderr)
        return
    print(r.stderr.strip().splitlines()[-1])
    ref, dist = metrics(ref_dir + ".jsonl"), metrics(dist_dir + ".jsonl")
    worst = max(abs(x["loss"] - y["loss"]) / abs(x["loss"]) for x, y in zip(ref, dist))
    print("losses one  :", " ".join(f"{x['loss']:.7f}" for x in ref))
    print("losses ranks:", " ".join(f"{x['loss']:.7f}" for x in dist))
    check(len(ref) == len(dist) == a.steps and worst <= 1e-5, f"losses agree: worst relative difference {worst:.2e} (tol 1e-5)")
    worst_p, name_p, count = 0.0, "", 0
    for f in sorted(os.listdir(ref_dir)):
        x, y = np.load(os.path.join(ref_dir, f)), np.load(os.path.join(dist_dir, f))
        if x.dtype.kind != "f":
            continue
        err = float(np.abs(x.astype(np.float64) - y).max()) / max(float(np.abs(x).max()), 1e-12)
        count += 1
        if err > worst_p:
            worst_p, name_p = err, f
    check(count > 0 and worst_p <= 1e-5, f"{count} parameters and buffers agree: worst {name_p} {worst_p:.2e} (tol 1e-5)")
    predicted = p["estimate"]["communication_bytes"]
    for kind in sorted(predicted):
        measured = [m["comm_bytes"][kind] for m in dist]
        check(all(abs(b - predicted[kind]) < 1e-6 for b in measured),
              f"{kind}: measured {measured[0]} B per step and device, plan {predicted[kind]:.0f} B")
    if a.hand_gpt:
        with open(os.path.splitext(a.model)[0] + ".json") as f:
            side = json.load(f)
        floats = side["param_count"] + side["config"]["vocab"] * side["config"]["hidden"] + 1
        n = a.np
        hand = 2 * (n - 1) / n * 4 * floats
        check(abs(hand - dist[0]["comm_bytes"]["all_reduce"]) < 1e-6 and abs(hand - predicted["all_reduce"]) < 1e-6,
              f"all_reduce by hand: 2(n-1)/n x 4 x {floats} = {hand:.0f} B")
    est = p["estimate"]["memory"]["peak_bytes"]
    peaks = dist[-1]["peak_bytes_per_rank"]
    within = all(abs(x - est) <= 0.1 * est + 2 ** 20 for x in peaks)
    what = f"peak memory per rank {max(peaks)} B, plan {est} B (tol 10% + 1 MiB)"
    if a.check_memory:
        check(within, what)
    else:
        print(("info " if within else "info (outside tolerance) ") + what)


def errors(a):
    os.makedirs(a.workdir, exist_ok=True)
    gpt, bert = os.path.join(a.models, "gpt_test.onnx"), os.path.join(a.models, "bert_test.onnx")
    dp4 = os.path.join(a.workdir, "dp4.json")
    plan(a.bin, gpt, dp4, "local:4", "data", 8, ["--optimizer", "sgd"])
    base = ["--model", gpt, "--steps", "3"]

    def expect_2(r, what, needle, ranks):
        lines = [l for l in r.stderr.splitlines() if l.startswith("alpa-run: rank")]
        ok = r.returncode == 2 and len(lines) == ranks and all(needle in l for l in lines)
        check(ok, f"{what}: exit {r.returncode}, {len(lines)} of {ranks} ranks say '{needle}'")
        if not ok:
            print(r.stderr)
        elif lines:
            print("     " + lines[0][:240])

    expect_2(mpirun(2, a.bin, ["--plan", dp4, *base]), "wrong -np", "mpirun -np 4", 2)
    expect_2(mpirun(4, a.bin, ["--plan", dp4, "--model", bert, "--steps", "3"]), "plan for another model",
             "graph_fingerprint", 4)
    p3 = os.path.join(a.workdir, "p3.json")
    plan(a.bin, gpt, p3, "builtin:p3.16xlarge:1", "data", 8, ["--optimizer", "sgd"])
    expect_2(mpirun(8, a.bin, ["--plan", p3, *base]), "plan for another cluster", "--allow-cluster-mismatch", 8)
    shard = os.path.join(a.workdir, "shard.json")
    plan(a.bin, gpt, shard, "local:4", "zero3", 8, ["--optimizer", "sgd"])
    expect_2(mpirun(4, a.bin, ["--plan", shard, *base]), "a ZeRO-3 plan (not executed yet)", "batch-parallel plans", 4)
    pipe = os.path.join(a.workdir, "pipe.json")
    plan(a.bin, gpt, pipe, "local:4", "megatron", 8, ["--optimizer", "sgd", "--tp", "1", "--pp", "2", "--dp", "2"])
    expect_2(mpirun(4, a.bin, ["--plan", pipe, *base]), "a pipeline plan", "pipeline plan", 4)

    # A rank that fails inside a step: every rank stops, the failed one named.
    env_fail = dict(ENV, ALPA_TEST_FAIL_RANK="1", ALPA_TEST_FAIL_STEP="2")
    start = time.time()
    r = subprocess.run(["mpirun", *MPI_FLAGS, "-x", "ALPA_TEST_FAIL_RANK", "-x", "ALPA_TEST_FAIL_STEP", "-np", "4",
                        os.path.join(a.bin, "alpa-run"), "--plan", dp4, "--model", gpt, "--steps", "1000"],
                       capture_output=True, text=True, env=env_fail, timeout=120)
    secs = time.time() - start
    named = "alpa-run: rank 1: error" in r.stderr and "injected failure" in r.stderr
    check(r.returncode != 0 and named and secs < 30,
          f"a rank failing at step 2: exit {r.returncode} after {secs:.1f} s, rank 1 named: {named}")

    # A killed rank: mpirun ends every rank.
    log = os.path.join(a.workdir, "killed.jsonl")
    if os.path.exists(log):
        os.remove(log)
    proc = subprocess.Popen(["mpirun", *MPI_FLAGS, "-np", "4", os.path.join(a.bin, "alpa-run"), "--plan", dp4,
                             "--model", gpt, "--steps", "100000", "--metrics", log],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)
    deadline = time.time() + 60
    while time.time() < deadline and not (os.path.exists(log) and os.path.getsize(log) > 0):
        time.sleep(0.2)
    victims = []
    while time.time() < deadline and len(victims) < 4:
        victims = subprocess.run(["pgrep", "-P", str(proc.pid), "alpa-run"], capture_output=True, text=True).stdout.split()
        time.sleep(0.2)
    if not check(len(victims) == 4, f"4 ranks running under mpirun (found {len(victims)})"):
        proc.kill()
        return
    os.kill(int(victims[2]), signal.SIGKILL)
    start = time.time()
    try:
        _, err = proc.communicate(timeout=30)
        secs = time.time() - start
        check(proc.returncode != 0, f"a killed rank: mpirun exits {proc.returncode} after {secs:.1f} s, no hang")
    except subprocess.TimeoutExpired:
        proc.kill()
        check(False, "a killed rank: mpirun still running after 30 s")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("mode", choices=["parity", "errors"])
    ap.add_argument("--bin", required=True, help="directory with alpa-plan and alpa-run")
    ap.add_argument("--workdir", required=True)
    ap.add_argument("--model")
    ap.add_argument("--models", help="errors: the test-model directory")
    ap.add_argument("--np", type=int, default=2)
    ap.add_argument("--method", default="data")
    ap.add_argument("--cluster", help="plan for this cluster and run with --allow-cluster-mismatch")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--microbatches", type=int, default=1)
    ap.add_argument("--logical-mesh")
    ap.add_argument("--optimizer", default="sgd")
    ap.add_argument("--lr", type=float, default=0.05)
    ap.add_argument("--momentum", type=float, default=0.0)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--hand-gpt", action="store_true")
    ap.add_argument("--check-memory", action="store_true")
    a = ap.parse_args()
    parity(a) if a.mode == "parity" else errors(a)
    if FAILED:
        print(f"{len(FAILED)} check(s) failed")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
