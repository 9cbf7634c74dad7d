#!/usr/bin/env python3
"""`mpirun -np N alpa-run --plan ...` against one device, and its failure behaviour (issue 5).

usage:
  planned_run_test.py parity --bin DIR --model M.onnx --workdir DIR --np N [--method data]
                      [--batch B] [--microbatches K] [--logical-mesh D0xD1] [--cluster SPEC]
                      [--optimizer sgd] [--lr X] [--momentum M] [--steps 10]
                      [--hand-gpt] [--memory-tolerance X --memory-why TEXT]
  planned_run_test.py errors --bin DIR --models DIR --workdir DIR
  planned_run_test.py resume --bin DIR --model M.onnx --workdir DIR

parity: plans the model with alpa-plan, trains it on one device (alpa-run, with the plan's
microbatches) and on N MPI ranks (alpa-run --plan) from the same seed and synthetic data, and
checks that
  - every step's loss agrees within 1e-5 relative,
  - every saved parameter's and buffer's update over the run agrees within 5e-4 of the update
    (||Δ_ranks - Δ_one|| / ||Δ_one||; Δ from the initial values, saved by a learning-rate-0 step),
  - the bytes the MPI communicator measured on every rank, every step, equal the plan file's
    figures exactly, per collective kind (a pipeline stage's own figures for its ranks; zero where
    the file lists none), and with --hand-gpt also a total computed by hand from the model's sidecar
    (independent of the planner): data parallelism all-reduces every parameter's gradient once,
    the tied embedding once per use (its two uses are reduced separately) and the scalar loss,
    2(n-1)/n * 4 * (param_count + vocab * hidden + 1) bytes,
  - every rank's allocator high-water mark is within 10% + min(64 KiB, 5%) (kernel scratch
    space, which plans do not count) of its peak in the plan file (the stage's, for a pipeline); a case with
    a wider bound says why (--memory-why). Runs with momentum are planned as sgd-momentum.
errors: wrong -np, a plan for another model, a plan for another cluster (all: exit code 2 and a
message on every rank), a rank that fails during a step (exit code 2) and a rank that is killed
(every rank stops within 30 s, the failed rank named). (Plans alpa-run cannot execute are refused
by alpa-plan itself now: tests/parity/grad_check.py's `!` plans and plan_cli_test.)
resume: SGD with momentum, 10 steps on one device against 5 steps on 4 ranks under a ZeRO-3 plan
(and under a 4-stage pipeline plan, resumed on 2 data-parallel ranks)
(parameters and momentum sharded) saved with --save and resumed for steps 6-10 on 2 data-parallel
ranks (another plan and rank count) and on one device: losses and final parameters within 1e-5; Adam on one device resumed bit-identically; a
second save replaces the first and leaves nothing behind; a checkpoint of another optimizer, too
few --steps, a damaged manifest and manifests with missing, mis-shaped or out-of-range entries
are refused (exit 2, naming manifest.json).
Exits 1 on any failure, printing every check.
"""
import argparse
import json
import re
import os
import shutil
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


def clean_workdir(path):
    """Each test starts from an empty directory: nothing a previous run saved can pass for this
    run's output."""
    shutil.rmtree(path, ignore_errors=True)
    os.makedirs(path)


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


def planned_optimizer(a):
    """The plan counts the state the run's optimizer keeps: SGD with momentum keeps a buffer."""
    return "sgd-momentum" if a.optimizer == "sgd" and a.momentum else a.optimizer


def parity(a):
    clean_workdir(a.workdir)
    cluster = a.cluster or f"local:{a.np}"
    extra = ["--optimizer", planned_optimizer(a)]
    if a.microbatches > 1:
        extra += ["--microbatches", str(a.microbatches)]
    if a.logical_mesh:
        extra += ["--logical-mesh", a.logical_mesh]
    if a.method == "megatron":
        extra += ["--tp", str(a.tp), "--pp", str(a.pp), "--dp", str(a.np // (a.tp * a.pp))]
    if a.schedule:
        extra += ["--schedule", a.schedule]
    extra += a.plan_extra.split() if a.plan_extra else []
    plan_path = os.path.join(a.workdir, "plan.json")
    if a.stages_2_1_1:
        p = stages_2_1_1(a, plan_path)
    else:
        p = plan(a.bin, a.model, plan_path, cluster, a.method, a.batch, extra)
    if a.move_boundary:
        p = move_boundary(a, p, plan_path)
    train = ["--model", a.model, "--steps", str(a.steps), "--lr", str(a.lr), "--momentum", str(a.momentum),
             "--seed", str(a.seed)]
    ref_dir, dist_dir = os.path.join(a.workdir, "one"), os.path.join(a.workdir, "ranks")
    dump_one, dump_ranks = os.path.join(a.workdir, "dump_one"), os.path.join(a.workdir, "dump_ranks")
    if a.check_routing:
        for d in (dump_one, dump_ranks):
            shutil.rmtree(d, ignore_errors=True)
    r = run([os.path.join(a.bin, "alpa-run"), *train, "--batch", str(a.batch), "--optimizer", a.optimizer,
             "--microbatches", str(a.microbatches), "--metrics", ref_dir + ".jsonl", "--save-params", ref_dir,
             *(["--dump-tensors", a.check_routing, "--dump-dir", dump_one] if a.check_routing else [])])
    if not check(r.returncode == 0, f"one device trains ({r.seconds:.1f} s)"):
        print(r.stderr)
        return
    # The initial parameters: one step at learning rate 0 changes no parameter (no run here
    # uses weight decay), only buffers (BatchNorm's running statistics, then one step on).
    init_dir = os.path.join(a.workdir, "init")
    r = run([os.path.join(a.bin, "alpa-run"), "--model", a.model, "--steps", "1", "--lr", "0", "--seed", str(a.seed),
             "--batch", str(a.batch), "--optimizer", a.optimizer, "--save-params", init_dir])
    if not check(r.returncode == 0, "one device, one step at learning rate 0 (the initial parameters)"):
        print(r.stderr)
        return
    extra_run = ["--allow-cluster-mismatch"] if a.cluster else []
    trace = os.path.join(a.workdir, "trace.json")
    r = mpirun(a.np, a.bin, ["--plan", plan_path, *train, *extra_run, "--metrics", dist_dir + ".jsonl",
                             "--save-params", dist_dir, "--trace", trace,
                             *(["--dump-tensors", a.check_routing, "--dump-dir", dump_ranks] if a.check_routing else [])])
    if not check(r.returncode == 0, f"{a.np} ranks train ({r.seconds:.1f} s)"):
        print(r.stdout, r.stderr)
        return
    print(r.stderr.strip().splitlines()[-1])
    if a.expect_output:
        lines = [l for l in r.stderr.splitlines() if re.search(a.expect_output, l)]
        check(len(lines) == a.expect_count, f"alpa-run says /{a.expect_output}/ {len(lines)} times (want {a.expect_count})")
    if a.expect_stages:
        shape = [(s["layers"], s["logical_mesh"]) for s in p["pipeline"]["stages"]] if "pipeline" in p else "one stage"
        check(len(p.get("pipeline", {}).get("stages", [1])) == a.expect_stages,
              f"the plan has {a.expect_stages} stage(s): {shape}")
    ref, dist = metrics(ref_dir + ".jsonl"), metrics(dist_dir + ".jsonl")
    worst = max(abs(x["loss"] - y["loss"]) / abs(x["loss"]) for x, y in zip(ref, dist))
    print("losses one  :", " ".join(f"{x['loss']:.7f}" for x in ref))
    print("losses ranks:", " ".join(f"{x['loss']:.7f}" for x in dist))
    check(len(ref) == len(dist) == a.steps and worst <= 1e-5, f"losses agree: worst relative difference {worst:.2e} (tol 1e-5)")
    updates_agree(a, ref_dir, dist_dir, init_dir)
    if a.check_routing:
        routing(a, dump_one, dump_ranks)
    stages = len(p["pipeline"]["stages"]) if "pipeline" in p else 1
    if stages > 1:
        pipeline_bytes(a, p, dist)
        # The trace: one named track per rank, each with the steps' forwards and backwards.
        with open(trace) as f:
            events = json.load(f)["traceEvents"]
        K = p["microbatches"]
        tracks = {e["tid"] for e in events if e["ph"] == "M"}
        counts = [sum(1 for e in events if e["tid"] == r and e["name"].split(" ")[0] in ("forward", "backward"))
                  for r in range(a.np)]
        check(tracks == set(range(a.np)) and counts == [2 * K * a.steps] * a.np,
              f"trace: {len(tracks)} tracks, forwards + backwards per rank {counts}")
    file_bytes = collective_bytes_from_plan_file(a, p, dist)
    if a.hand_gpt:
        with open(os.path.splitext(a.model)[0] + ".json") as f:
            side = json.load(f)
        floats = side["param_count"] + side["config"]["vocab"] * side["config"]["hidden"] + 1
        n = a.np
        hand = 2 * (n - 1) / n * 4 * floats
        check(abs(hand - dist[0]["comm_bytes"]["all_reduce"]) < 1e-6 and abs(hand - file_bytes[0]["all_reduce"]) < 1e-6,
              f"all_reduce by hand: 2(n-1)/n x 4 x {floats} = {hand:.0f} B")
    if a.hand_megatron:
        # transformer_layers_test (2 BERT layers, activations [8, 8, 128] fp32) under Megatron-LM's
        # pattern: per layer two row-parallel GEMMs (attention output, FFN output) all-reduce
        # their partial sums in the forward; in the backward, every column-parallel GEMM whose
        # input needs a gradient all-reduces it (q, k and v of the second layer — the first
        # layer's input is data — and each layer's first FFN GEMM).
        layers, act = 2, 8 * 8 * 128 * 4
        count = 2 * layers + 3 * (layers - 1) + layers
        hand = count * act * 2 * (a.np - 1) / a.np
        check(abs(hand - dist[0]["comm_bytes"]["all_reduce"]) < 1e-6 and abs(hand - file_bytes[0]["all_reduce"]) < 1e-6,
              f"all_reduce by hand: {count} activation all-reduces x {act} B x 2(n-1)/n = {hand:.0f} B")
    memory_against_plan_file(a, p, dist)


# One device and the ranks both compute in fp32, in different orders: the worst update
# difference over the suite is 4.7e-5 of the update (megatron_bert_layers_np4's wq, 10 steps).
UPDATE_TOL = 5e-4


def updates_agree(a, ref_dir, dist_dir, init_dir):
    """Every parameter's and buffer's update over the run, p_10 - p_0, on the ranks against one
    device's, relative to the update's own size: ||Δ_ranks - Δ_one|| <= UPDATE_TOL ||Δ_one||.
    (Relative to the parameter, a zeroed gradient of a weight that moves by 1e-5 of its size in
    ten steps would pass.) An update that is rounding noise on one device too (a key bias:
    softmax ignores a constant added to every key) is held to UPDATE_TOL of the largest update."""
    deltas = {}
    for f in sorted(os.listdir(ref_dir)):
        x = np.load(os.path.join(ref_dir, f))
        if x.dtype.kind != "f":
            continue
        y, p0 = np.load(os.path.join(dist_dir, f)), np.load(os.path.join(init_dir, f)).astype(np.float64)
        deltas[f] = (y.astype(np.float64) - p0, x.astype(np.float64) - p0)
    largest = max((float(np.linalg.norm(t)) for _, t in deltas.values()), default=0.0)
    worst, name, bad = 0.0, "", []
    for f, (got, want) in deltas.items():
        err = float(np.linalg.norm(got - want)) / max(float(np.linalg.norm(want)), UPDATE_TOL * largest, 1e-30)
        if err > UPDATE_TOL:
            bad.append(f"{f} {err:.2e}")
        if err >= worst:
            worst, name = err, f
    check(deltas and not bad, f"{len(deltas)} parameters' and buffers' updates agree: worst {name} {worst:.2e} "
          f"(tol {UPDATE_TOL} of the update)" + (f"; outside: {bad[:5]}" if bad else ""))


def per_rank_from_plan_file(p, np_, figure):
    """`figure(d)` of each rank's part of the plan file: the estimate of a single-stage plan,
    the rank's stage of a pipeline (each stage records its own devices' figures)."""
    if "pipeline" not in p:
        return [figure(p["estimate"])] * np_
    out = [None] * np_
    for st in p["pipeline"]["stages"]:
        for r in st["device_ids"]:
            out[r] = figure(st)
    return out


def collective_bytes_from_plan_file(a, p, dist):
    """Every rank's collective bytes, every step, per kind, against the plan file as written by
    alpa-plan (not alpa-run's own prediction): a stage whose file lists no bytes of a kind sends
    none. Exact for 2, 4 and 8 ranks; with 3 the ring factor 4/3 is rounded per collective call."""
    file_bytes = per_rank_from_plan_file(p, a.np, lambda d: d["communication_bytes"])
    exact = a.np & (a.np - 1) == 0
    for kind in ("all_gather", "all_reduce", "all_to_all", "reduce_scatter"):
        planned = [fb.get(kind, 0) for fb in file_bytes]
        bad = []
        for m in dist:
            measured = m["comm_bytes_per_rank"][kind]
            for r in range(a.np):
                tol = 1e-6 if exact else 1e-5 * planned[r] + 1
                if abs(measured[r] - planned[r]) > tol:
                    bad.append((m["step"], r, measured[r]))
        check(not bad, f"{kind}: every rank, every step as the plan file says: per rank {planned} B"
              + ("" if exact else " (within rounding)") + (f"; differs (step, rank, measured): {bad[:4]}" if bad else ""))
    return file_bytes


# Kernels take scratch space from the same allocator (a transposed operand, an Einsum's permuted
# operands) that no plan counts: besides 10%, each rank may exceed its plan-file peak by 64 KiB or
# 5% of the peak, whichever is smaller (so the smallest runs, 0.12 MB, keep a bound of 15%).
# The figure alpa-plan writes simulates the rank programs' allocations (tests/spmd/
# program_memory_test.cc): single-stage runs match it to the byte but for the MoE's scratch.
MEMORY_SCRATCH_ALLOWANCE = 64 * 1024
MEMORY_SCRATCH_SHARE = 0.05


def memory_against_plan_file(a, p, dist):
    planned = per_rank_from_plan_file(p, a.np, lambda d: d["memory"]["peak_bytes"])
    measured = [max(m["peak_bytes_per_rank"][r] for m in dist) for r in range(a.np)]
    worst = max(abs(x - e) / e for x, e in zip(measured, planned))
    ok = all(abs(x - e) <= a.memory_tolerance * e + min(MEMORY_SCRATCH_ALLOWANCE, MEMORY_SCRATCH_SHARE * e)
             for x, e in zip(measured, planned))
    why = f" ({a.memory_why})" if a.memory_why else ""
    check(ok, f"peak memory per rank {measured} B, plan file {planned} B: worst {worst:.1%} "
          f"(tol {a.memory_tolerance:.0%} + min(64 KiB, 5%){why})")


def routing(a, dump_one, dump_ranks):
    """The tensors --check-routing names (an MoE's TopK indices: the experts each token goes
    to), every step and microbatch, are the same on the ranks as on one device: a rank holding
    the whole tensor has it exactly; ranks holding a block of its rows (a split batch; ranks
    r // (np / ways) share block r) have, put together, exactly one device's."""
    files = sorted(os.listdir(os.path.join(dump_one, "rank0")))
    same, total = 0, 0
    for f in files:
        one = np.load(os.path.join(dump_one, "rank0", f))
        parts = [np.load(os.path.join(dump_ranks, f"rank{r}", f)) for r in range(a.np)]
        ways = one.shape[0] // parts[0].shape[0]
        if ways == 1:
            ok = all(np.array_equal(x, one) for x in parts)
        else:
            per = a.np // ways
            blocks = [parts[b * per] for b in range(ways)]
            ok = np.array_equal(np.concatenate(blocks, 0), one) and all(
                np.array_equal(parts[r], blocks[r // per]) for r in range(a.np))
        same += ok
        total += one.size
    check(files and same == len(files),
          f"routing: {same} of {len(files)} dumps ({total} choices) identical to one device's ({a.check_routing})")


def stages_2_1_1(a, plan_path):
    """A 3-stage plan on 4 ranks with submeshes of 2, 1 and 1 devices and different logical
    shapes (2x1, 1x1, 1x1), put together by hand from two searched plans with the same 4 layers —
    pp-dp's first stage (data parallel on devices 0-1) and Megatron pp4's last two stages — and
    re-costed by `alpa-plan cost --json`. The tied embedding is then shared by a 2-device and a
    1-device stage."""
    common = ["--optimizer", planned_optimizer(a), "--microbatches", str(a.microbatches), "--layers", "4", "--remat", "none"]
    if a.first_from_megatron:  # the first stage of Megatron's pp2 x dp2 instead (any model)
        ppdp = plan(a.bin, a.model, plan_path + ".ppdp", "local:4", "megatron", a.batch,
                    common + ["--tp", "1", "--pp", "2", "--dp", "2"])
    else:
        ppdp = plan(a.bin, a.model, plan_path + ".ppdp", "local:4", "pp-dp", a.batch, common + ["--memory-budget", "2000000"])
    pp4 = plan(a.bin, a.model, plan_path + ".pp4", "local:4", "megatron", a.batch, common + ["--tp", "1", "--pp", "4", "--dp", "1"])
    first, third, fourth = ppdp["pipeline"]["stages"][0], pp4["pipeline"]["stages"][2], pp4["pipeline"]["stages"][3]
    check(first["layers"] == [0, 2] and first["device_ids"] == [0, 1], f"the 2-rank first stage: layers {first['layers']} on {first['device_ids']}, logical {first['logical_mesh']}")
    third["device_ids"], fourth["device_ids"] = [2], [3]
    first["inflight"], third["inflight"], fourth["inflight"] = 3, 2, 1
    ppdp["pipeline"]["stages"] = [first, third, fourth]
    ppdp["memory_budget_bytes"] = pp4["memory_budget_bytes"]  # the devices' own (the first stage now holds 3 microbatches)
    with open(plan_path + ".edited", "w") as f:
        json.dump(ppdp, f, indent=1)
    r = run([os.path.join(a.bin, "alpa-plan"), "cost", plan_path + ".edited", "--model", a.model, "--json"])
    check(r.returncode == 0, f"alpa-plan cost accepts the 2-1-1 plan {r.stderr.strip()[:200]}")
    with open(plan_path, "w") as f:
        f.write(r.stdout)
    return json.loads(r.stdout)


def move_boundary(a, p, plan_path):
    """Hand-edits a two-stage plan as a user would: stage 0's last layer moves to stage 1 (its
    nodes' strategies with it; stage 1 also takes stage 0's tensor specs), then `alpa-plan cost
    --json` validates and re-costs it (transfers and shared parameters as the stages now lie).
    The edited plan is what runs."""
    pl = p["pipeline"]
    s0, s1 = pl["stages"]
    last = s0["layers"][1] - 1
    names = list(s0["strategies"])
    i, j = names.index(pl["layers"][last]["first"]), names.index(pl["layers"][last]["last"])
    moved = {n: s0["strategies"][n] for n in names[i:j + 1]}
    s0["strategies"] = {n: v for n, v in s0["strategies"].items() if n not in moved}
    s1["strategies"] = {**moved, **s1["strategies"]}
    s0["layers"], s1["layers"] = [s0["layers"][0], last], [last, s1["layers"][1]]
    s1["tensors"] = {**s0["tensors"], **s1["tensors"]}
    edited = plan_path + ".edited"
    with open(edited, "w") as f:
        json.dump(p, f, indent=1)
    r = run([os.path.join(a.bin, "alpa-plan"), "cost", edited, "--model", a.model, "--json"])
    check(r.returncode == 0, f"alpa-plan cost accepts the plan with stage 0's last layer moved to stage 1 {r.stderr.strip()[:200]}")
    with open(plan_path, "w") as f:
        f.write(r.stdout)
    out = json.loads(r.stdout)
    check([st["layers"] for st in out["pipeline"]["stages"]] == [s0["layers"], s1["layers"]],
          f"the edited stages: {[st['layers'] for st in out['pipeline']['stages']]}")
    return out


def pipeline_bytes(a, p, dist):
    """A pipeline's point-to-point bytes per rank: measured = alpa-run's prediction = the plan's
    transfers (each activation per microbatch, its gradient back) and shared parameters (each
    holder sends its gradient sum to every other holder once per step), summed here from the
    plan file; with --hand-pipeline also by hand from the model's sidecar."""
    pl, K = p["pipeline"], p["microbatches"]
    ranks = [st["device_ids"] for st in pl["stages"]]
    rows = p["global_batch"] // K  # one microbatch; a stage of n ranks holds rows/n each, in order
    from_plan = [0] * a.np

    def share(sender, receiver, nbytes):
        """Each rank of the sending stage sends each reader the rows of its block it holds
        (boundary activations and their gradients are split by batch rows)."""
        ns, nr = len(ranks[sender]), len(ranks[receiver])
        for i, r in enumerate(ranks[sender]):
            for j in range(nr):
                lo = max(i * rows // ns, j * rows // nr)
                hi = min((i + 1) * rows // ns, (j + 1) * rows // nr)
                from_plan[r] += K * nbytes * max(0, hi - lo) // rows

    for t in pl["transfers"]:
        share(t["from_stage"], t["to_stage"], t["bytes"])
        share(t["to_stage"], t["from_stage"], t["bytes"])
    for sp in pl.get("shared", []):
        # Each holder stage's gradient sum goes once to every other holder stage of nt ranks
        # (each holding it whole): rank j takes a 1/nt slice from the sender's rank j mod ns and
        # relays it to the nt - 1 others (the paper's local all-gather).
        for s in sp["stages"]:
            for t in sp["stages"]:
                if t == s:
                    continue
                nt = len(ranks[t])
                for i, r in enumerate(ranks[s]):
                    from_plan[r] += sp["bytes"] // nt * sum(1 for j in range(nt) if j % len(ranks[s]) == i)
                for r in ranks[t]:
                    from_plan[r] += (nt - 1) * (sp["bytes"] // nt)
    measured = dist[-1]["send_bytes_per_rank"]
    check(all(m["send_bytes_per_rank"] == measured for m in dist), "the same bytes sent every step")
    relays = dist[-1]["relay_bytes_per_rank"]
    check(relays == dist[0]["plan_relay_bytes_per_rank"],
          f"relays inside the receiving stages (local all-gathers) per rank {relays}, alpa-run's plan {dist[0]['plan_relay_bytes_per_rank']}")
    # Between the meshes every element crosses once: each boundary tensor and its gradient per
    # microbatch (the plan's transfers), each holder's shared gradient sum to each other holder.
    crossing = sum(m - r for m, r in zip(measured, relays))
    expected = 2 * K * sum(t["bytes"] for t in pl["transfers"]) + sum(
        sp["bytes"] * len(sp["stages"]) * (len(sp["stages"]) - 1) for sp in pl.get("shared", []))
    check(crossing == expected, f"bytes between the stages' meshes {crossing} = the plan's: 2 x K x transfers + shared sums "
          f"to each other holder = {expected}")
    # (Collectives inside the stages: every rank against its stage's figures in the plan file,
    # collective_bytes_from_plan_file.)
    if any(st["method"] != "data" and len(st["device_ids"]) > 1 for st in pl["stages"]):
        # Tensor-parallel stages hold boundary tensors in blocks this script does not model:
        # alpa-run's share of the plan's transfers (from every rank's blocks) is the reference.
        check(measured == dist[0]["plan_send_bytes_per_rank"],
              f"point-to-point bytes per rank {measured}, plan (as the ranks hold the tensors) {dist[0]['plan_send_bytes_per_rank']}")
    else:
        check(measured == from_plan == dist[0]["plan_send_bytes_per_rank"],
              f"point-to-point bytes per rank {measured}, plan {from_plan}")
    if a.hand_pipeline:
        # GPT in two stages cut between its blocks: the residual stream [b/K, seq, hidden] fp32
        # goes forward and its gradient back once per microbatch; the tied embedding's gradient
        # [vocab, hidden] goes each way once per step.
        with open(os.path.splitext(a.model)[0] + ".json") as f:
            c = json.load(f)["config"]
        hand = K * (a.batch // K) * c["seq"] * c["hidden"] * 4 + c["vocab"] * c["hidden"] * 4
        check(measured == [hand] * a.np, f"point-to-point bytes by hand: K x b/K x seq x hidden x 4 + vocab x hidden x 4 = {hand} B")


def errors(a):
    clean_workdir(a.workdir)
    gpt, bert = os.path.join(a.models, "gpt_test.onnx"), os.path.join(a.models, "bert_test.onnx")
    dp4 = os.path.join(a.workdir, "dp4.json")
    plan(a.bin, gpt, dp4, "local:4", "data", 8, ["--optimizer", "sgd"])
    base = ["--model", gpt, "--steps", "3"]

    def expect_2(r, what, needle, ranks):
        lines = [l for l in r.stderr.splitlines() if l.startswith("alpa-run: rank")]
        # Ranks whose own part was fine say which rank failed instead.
        ok = r.returncode == 2 and len(lines) == ranks and all(needle in l or "failed to start" in l for l in lines) and any(
            needle in l for l in lines)
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
    # A rank that fails inside a step: every rank stops, the failed one named.
    env_fail = dict(ENV, ALPA_TEST_FAIL_RANK="1", ALPA_TEST_FAIL_STEP="2")
    start = time.time()
    r = subprocess.run(["mpirun", *MPI_FLAGS, "-x", "ALPA_TEST_FAIL_RANK", "-x", "ALPA_TEST_FAIL_STEP", "-np", "4",
                        os.path.join(a.bin, "alpa-run"), "--plan", dp4, "--model", gpt, "--steps", "1000"],
                       capture_output=True, text=True, env=env_fail, timeout=120)
    secs = time.time() - start
    named = "alpa-run: rank 1: error" in r.stderr and "injected failure" in r.stderr
    # The injected failure is a UserError on rank 1: every rank ends through MPI_Abort with
    # exit code 2, which mpirun passes on.
    check(r.returncode == 2 and named and secs < 30,
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


def compare(ref_dir, ref_metrics, dir_, metrics_, what, first_step=1):
    ref = {m["step"]: m["loss"] for m in metrics(ref_metrics)}
    got = metrics(metrics_)
    worst = max(abs(m["loss"] - ref[m["step"]]) / abs(ref[m["step"]]) for m in got)
    check(got[0]["step"] == first_step and got[-1]["step"] == max(ref) and worst <= 1e-5,
          f"{what}: losses of steps {got[0]['step']}-{got[-1]['step']} within {worst:.2e} of one device (tol 1e-5)")
    worst_p = 0.0
    for f in sorted(os.listdir(ref_dir)):
        x, y = np.load(os.path.join(ref_dir, f)), np.load(os.path.join(dir_, f))
        if x.dtype.kind == "f":
            worst_p = max(worst_p, float(np.abs(x.astype(np.float64) - y).max()) / max(float(np.abs(x).max()), 1e-12))
    check(worst_p <= 1e-5, f"{what}: final parameters within {worst_p:.2e} (tol 1e-5)")


def resume(a):
    clean_workdir(a.workdir)
    w = lambda name: os.path.join(a.workdir, name)  # noqa: E731
    alpa_run = os.path.join(a.bin, "alpa-run")
    hyper = ["--lr", "0.05", "--momentum", "0.9"]  # SGD with momentum: optimizer state to carry over
    one = ["--model", a.model, "--batch", "8", "--optimizer", "sgd", *hyper]
    r = run([alpa_run, *one, "--seed", "3", "--steps", "10", "--metrics", w("one.jsonl"), "--save-params", w("one")])
    check(r.returncode == 0, "one device, 10 steps")
    plan(a.bin, a.model, w("dp4.json"), "local:4", "data", 8, ["--optimizer", "sgd"])
    plan(a.bin, a.model, w("z3_4.json"), "local:4", "zero3", 8, ["--optimizer", "sgd"])
    plan(a.bin, a.model, w("dp2.json"), "local:2", "data", 8, ["--optimizer", "sgd"])
    ck = w("ck")
    # Saved twice (the second save replaces the first): data-parallel, then ZeRO-3, whose
    # parameters and momentum are sharded 4 ways.
    for attempt, p in ((1, "dp4.json"), (2, "z3_4.json")):
        r = mpirun(4, a.bin, ["--plan", w(p), "--model", a.model, *hyper, "--seed", "3", "--steps", "5", "--save", ck])
        check(r.returncode == 0 and os.path.exists(os.path.join(ck, "manifest.json")),
              f"4 ranks ({p}), steps 1-5, --save (attempt {attempt})")
    left = [p for p in os.listdir(a.workdir) if p.startswith("ck.")]
    check(not left, f"nothing left beside the checkpoint ({left})")
    r = mpirun(2, a.bin, ["--plan", w("dp2.json"), "--model", a.model, *hyper, "--steps", "10", "--resume", ck,
                          "--metrics", w("two.jsonl"), "--save-params", w("two")])
    if check(r.returncode == 0, "2 ranks resume at step 6"):
        compare(w("one"), w("one.jsonl"), w("two"), w("two.jsonl"), "resumed on 2 ranks", 6)
    # Resumed under Megatron-LM tensor parallelism (the embedding, the head and every layer's
    # weights split 2 ways) from the 4-rank checkpoint.
    plan(a.bin, a.model, w("mg2.json"), "local:2", "megatron", 8, ["--optimizer", "sgd", "--tp", "2", "--pp", "1", "--dp", "1"])
    r = mpirun(2, a.bin, ["--plan", w("mg2.json"), "--model", a.model, *hyper, "--steps", "10", "--resume", ck,
                          "--metrics", w("mg.jsonl"), "--save-params", w("mg")])
    if check(r.returncode == 0, "2 ranks under a Megatron tp2 plan resume at step 6"):
        compare(w("one"), w("one.jsonl"), w("mg"), w("mg.jsonl"), "resumed under Megatron tp2", 6)
    mb = ["--microbatches", "4"]
    run([alpa_run, *one, *mb, "--seed", "3", "--steps", "10", "--metrics", w("one_mb4.jsonl"), "--save-params", w("one_mb4")])
    plan(a.bin, a.model, w("pp4.json"), "local:4", "megatron", 8,
         ["--optimizer", "sgd", "--tp", "1", "--pp", "4", "--dp", "1", "--layers", "4", *mb])
    plan(a.bin, a.model, w("dp2_mb4.json"), "local:2", "data", 8, ["--optimizer", "sgd", *mb])
    plan(a.bin, a.model, w("tp2pp2.json"), "local:4", "megatron", 8,
         ["--optimizer", "sgd", "--tp", "2", "--pp", "2", "--dp", "1", *mb])
    # Saved under a pipeline (4 stages of one rank, 1F1B, 4 microbatches; the tied embedding held
    # by stages 0 and 3 is written once), then under Megatron-LM's 3-D layout (2 stages of tensor
    # parallelism 2: parameters and momentum in blocks, the tied embedding sharded differently by
    # the two stages), each resumed on 2 data-parallel ranks.
    for name, saved, what in (("pipe", "pp4.json", "4 pipeline stages"), ("3d", "tp2pp2.json", "Megatron tp2 x pp2")):
        ck_saved = w("ck_" + name)
        r = mpirun(4, a.bin, ["--plan", w(saved), "--model", a.model, *hyper, "--seed", "3", "--steps", "5", "--save", ck_saved])
        check(r.returncode == 0 and os.path.exists(os.path.join(ck_saved, "manifest.json")), f"{what}, steps 1-5, --save")
        r = mpirun(2, a.bin, ["--plan", w("dp2_mb4.json"), "--model", a.model, *hyper, "--steps", "10", "--resume", ck_saved,
                              "--metrics", w(name + "_dp2.jsonl"), "--save-params", w(name + "_dp2")])
        if check(r.returncode == 0, f"2 data-parallel ranks resume the {what} checkpoint at step 6"):
            compare(w("one_mb4"), w("one_mb4.jsonl"), w(name + "_dp2"), w(name + "_dp2.jsonl"), f"{what} -> data parallel", 6)
    r = run([alpa_run, *one, "--steps", "10", "--resume", ck, "--metrics", w("single.jsonl"), "--save-params", w("single")])
    if check(r.returncode == 0, "one device resumes at step 6"):
        compare(w("one"), w("one.jsonl"), w("single"), w("single.jsonl"), "resumed on one device", 6)
    # Adam on one device: 5 steps, save, resume: bit-identical to 10 steps (its step count and
    # moments travel in the checkpoint).
    adam = ["--model", a.model, "--batch", "8", "--optimizer", "adam", "--lr", "0.001"]
    run([alpa_run, *adam, "--steps", "10", "--save-params", w("adam10")])
    run([alpa_run, *adam, "--steps", "5", "--save", w("ck_adam")])
    r = run([alpa_run, *adam, "--steps", "10", "--resume", w("ck_adam"), "--save-params", w("adam_resumed")])
    same = r.returncode == 0 and all(np.array_equal(np.load(os.path.join(w("adam10"), f)), np.load(os.path.join(w("adam_resumed"), f)))
                                     for f in os.listdir(w("adam10")))
    check(same, "Adam, one device: 5 steps + resume to 10 is bit-identical to 10 steps")
    r = run([alpa_run, "--model", a.model, "--batch", "8", "--optimizer", "adam", "--steps", "10", "--resume", ck])
    check(r.returncode == 2 and "optimizer" in r.stderr, "a checkpoint of another optimizer: exit 2, " + r.stderr.strip()[:160])
    r = run([alpa_run, *one, "--steps", "5", "--resume", ck])
    check(r.returncode == 2 and "--steps" in r.stderr, "--steps not beyond the checkpoint: exit 2, " + r.stderr.strip()[:160])
    # Manifests that once crashed the reader (issue 20), each edited from the good one: exit 2
    # naming the manifest and the element.
    with open(os.path.join(ck, "manifest.json")) as f:
        good = json.load(f)
    first = sorted(good["tensors"])[0]

    def edited(change):
        m = json.loads(json.dumps(good))
        change(m)
        return m
    shard = lambda m: m["tensors"][first]["shards"][0]  # noqa: E731
    cases = {
        "no tensors": edited(lambda m: m.pop("tensors")),
        "no ranges": edited(lambda m: shard(m).pop("ranges")),
        "a one-element range": edited(lambda m: shard(m)["ranges"].__setitem__(0, [0])),
        "a bool range": edited(lambda m: shard(m)["ranges"].__setitem__(0, [False, True])),
        "a range beyond the shape": edited(lambda m: shard(m)["ranges"].__setitem__(0, [0, 10 ** 6])),
        "nested shards": edited(lambda m: m["tensors"][first].__setitem__("shards", [[shard(m)]])),
        "a shard outside the directory": edited(lambda m: shard(m).__setitem__("file", "../x.npy")),
        "step 2^63": edited(lambda m: m.__setitem__("step", 2 ** 63)),
        "step -0.0": edited(lambda m: m.__setitem__("step", -0.0)),
    }
    refused = []
    for what, m in cases.items():
        with open(os.path.join(ck, "manifest.json"), "w") as f:
            json.dump(m, f)
        r = run([alpa_run, *one, "--steps", "10", "--resume", ck])
        refused.append(what) if r.returncode == 2 and "manifest.json" in r.stderr else print(f"  {what}: exit {r.returncode} {r.stderr.strip()[-200:]}")
    check(len(refused) == len(cases), f"bad manifests refused with exit 2 naming manifest.json: {len(refused)} of {len(cases)}")
    with open(os.path.join(ck, "manifest.json"), "w") as f:
        f.write('{"format": "alpa-checkpoint/1", "step": 5, "tensors": ')
    r = run([alpa_run, *one, "--steps", "10", "--resume", ck])
    check(r.returncode == 2 and "manifest.json" in r.stderr, "a damaged manifest: exit 2, " + r.stderr.strip()[:160])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("mode", choices=["parity", "errors", "resume"])
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
    ap.add_argument("--tp", type=int, default=2, help="megatron: tensor-parallel size (one stage, the rest data parallel)")
    ap.add_argument("--pp", type=int, default=1, help="megatron: pipeline stages")
    ap.add_argument("--schedule", help="pipeline schedule (1f1b or gpipe)")
    ap.add_argument("--first-from-megatron", action="store_true",
                    help="--stages-2-1-1: the 2-rank stage from Megatron's pp2 x dp2 plan (else pp-dp's)")
    ap.add_argument("--expect-output", help="regex a line of the ranks' stderr must match (--expect-count times)")
    ap.add_argument("--expect-count", type=int, default=1)
    ap.add_argument("--expect-stages", type=int, help="the plan must have this many pipeline stages")
    ap.add_argument("--plan-extra", help="more alpa-plan search flags, space-separated")
    ap.add_argument("--hand-pipeline", action="store_true", help="GPT in two stages: point-to-point bytes by hand")
    ap.add_argument("--move-boundary", action="store_true", help="two stages: hand-edit the plan (a layer moved), re-cost, run")
    ap.add_argument("--stages-2-1-1", action="store_true", help="GPT: three stages on 2, 1 and 1 ranks, composed by hand, re-costed, run")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--check-routing", help="regex of tensors (an MoE's TopK indices) that must equal one device's")
    ap.add_argument("--hand-gpt", action="store_true")
    ap.add_argument("--hand-megatron", action="store_true", help="transformer_layers_test under --tp: all-reduces by hand")
    ap.add_argument("--memory-tolerance", type=float, default=0.10,
                    help="relative bound on each rank's peak against its plan-file peak (10%%; wider only with --memory-why)")
    ap.add_argument("--memory-why", default="", help="why this case's memory bound is wider than 10%%")
    a = ap.parse_args()
    {"parity": parity, "errors": errors, "resume": resume}[a.mode](a)
    if FAILED:
        print(f"{len(FAILED)} check(s) failed")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
