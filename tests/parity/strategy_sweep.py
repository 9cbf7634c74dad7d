#!/usr/bin/env python3
"""Every strategy of every op, forced through a plan, against PyTorch's float64 gradients.

usage: strategy_sweep.py sweep --bin DIR --model M --workdir DIR [--meshes 1x2,2x1,1x4,2x2]
                               [--per-kind-limit N]
       strategy_sweep.py edits --bin DIR --model M --workdir DIR [--meshes ...] --accepted N
                               [--seed S]

sweep: for each logical mesh, a data-parallel plan of the model is searched (`--method shard
--logical-mesh`), `alpa-plan cost --strategies` lists every editable node and the strategies it
may take, and every (op kind, strategy) pair not seen before on that mesh is forced into the
plan on the first node offering it: the plan is edited, completed by `alpa-plan cost
--derive-followers` (grad_check.edit_plan), re-costed and trained for one step on the mesh's ranks; the
gradients must match float64 within the bound of grad_check.py. Op kinds are the node names'
last component without its counter ("/blocks.0/attn/MatMul_1" -> MatMul), so the repeated
blocks of a model are swept once. An edit that cost reverts (its repairs undo it) is not
counted. Prints how many (op, strategy, mesh) combinations ran and matched.

edits: the property test. Random single-node strategy edits of the searched plans (a random
node, a random strategy of its list, a random mesh), completed by cost like the sweep's,
until N edits are accepted by cost; every accepted plan must train with gradients within the
bound. Prints the counts of tried, refused and accepted edits.

Exits 1 on any gradient outside the bound or any failure that is not a refusal with exit 2.
"""
import argparse
import json
import os
import random
import re
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import grad_check  # noqa: E402


def op_kind(node: str) -> str:
    return re.sub(r"_\d+$", "", node.rsplit("/", 1)[-1])


def editable_nodes(h, mesh, workdir):
    """Searches the mesh's base plan; returns (plan spec, {node: [strategies]}, plan path)."""
    d0, d1 = (int(d) for d in mesh.split("x"))
    ranks = d0 * d1
    plan_path = os.path.join(workdir, f"base_{mesh}.json")
    r = grad_check.run([os.path.join(h.a.bin, "alpa-plan"),
                        *grad_check.search_args("shard", ranks, {"mesh": mesh}, h.onnx_path, h.a.batch, plan_path)])
    if r.returncode != 0:
        raise SystemExit(f"FAIL the base plan on {mesh}: {r.stderr.strip()[-400:]}")
    r = grad_check.run([os.path.join(h.a.bin, "alpa-plan"), "cost", plan_path, "--model", h.onnx_path, "--strategies"])
    if r.returncode != 0:
        raise SystemExit(f"FAIL cost --strategies on {mesh}: {r.stderr.strip()[-400:]}")
    with open(plan_path) as f:
        chosen = json.load(f)["strategies"]
    return f"shard:{ranks}:mesh={mesh}", json.loads(r.stdout), chosen


def sweep(h, meshes, limit):
    ran, refused, failed = 0, 0, []
    for mesh in meshes:
        base, nodes, chosen = editable_nodes(h, mesh, h.a.workdir)
        seen = set()
        per_kind = {}
        for node, strategies in nodes.items():
            kind = op_kind(node)
            for strategy in strategies:
                pattern = (kind, strategy)
                if pattern in seen or (limit and per_kind.get(kind, 0) >= limit):
                    continue
                seen.add(pattern)
                spec = base if strategy == chosen.get(node) else f"{base}@{node}={strategy}"
                status, _ = h.check(spec, quiet=True)
                if status == "refused":
                    refused += 1
                    continue
                per_kind[kind] = per_kind.get(kind, 0) + 1
                ran += 1
                if status != "ok":
                    failed.append(f"{mesh} {node} {strategy}")
        print(f"  {mesh}: {len(seen)} (op, strategy) pairs over {len(nodes)} editable nodes", flush=True)
    print(f"{h.a.model}: swept {ran} (op, strategy, mesh) combinations with gradients checked, "
          f"{refused} refused by cost, {len(failed)} outside the bound")
    return failed


def random_edits(h, meshes, wanted, seed):
    rng = random.Random(seed)
    bases = {mesh: editable_nodes(h, mesh, h.a.workdir) for mesh in meshes}
    tried, refused, accepted, failed = 0, 0, 0, []
    while accepted < wanted and tried < 20 * wanted:
        mesh = rng.choice(meshes)
        base, nodes, chosen = bases[mesh]
        node = rng.choice(sorted(nodes))
        others = [s for s in nodes[node] if s != chosen.get(node)]
        if not others:
            continue
        strategy = rng.choice(others)
        tried += 1
        status, _ = h.check(f"{base}@{node}={strategy}", quiet=True)
        if status == "refused":
            refused += 1
            continue
        accepted += 1
        if status != "ok":
            failed.append(f"{mesh} {node} {strategy}")
    print(f"{h.a.model}: {tried} random single-node edits, {refused} refused by cost, {accepted} accepted "
          f"and trained, {len(failed)} outside the bound")
    if accepted < wanted:
        failed.append(f"only {accepted} of {wanted} edits accepted")
    return failed


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("mode", choices=("sweep", "edits"))
    grad_check.add_common_args(ap)
    ap.add_argument("--meshes", default="1x2,2x1,1x4,2x2")
    ap.add_argument("--per-kind-limit", type=int, default=0, help="sweep: at most N strategies per op kind and mesh (0: all)")
    ap.add_argument("--accepted", type=int, default=200)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    h = grad_check.Harness(a)
    h.set_bounds_from_one_device()
    meshes = a.meshes.split(",")
    failed = sweep(h, meshes, a.per_kind_limit) if a.mode == "sweep" else random_edits(h, meshes, a.accepted, a.seed)
    for f in failed:
        print("FAIL", f)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
