#!/usr/bin/env python3
"""One training step's gradients, under plans, against PyTorch's float64 gradients.

usage: grad_check.py --bin DIR --model se_cnn|gpt_tied|mlp --workdir DIR [--batch B]
                     [--lr X] PLAN...

PLAN is `one` (one device) or `METHOD:N` (alpa-plan search --method METHOD on local:N, run by
mpirun -np N), each optionally followed by `:key=value,...` with mb=K (microbatches),
tp/pp/dp (megatron), schedule=gpipe, mesh=D0xD1 (logical mesh), layers=L, and then by any number of
`@NODE=STRATEGY` hand edits (applied to the searched plan, which `alpa-plan cost` then
completes, validates and re-costs, as a user editing a plan would: edit_plan):
  one  one:mb=2  data:4  shard:4:mesh=2x2  auto:4:mb=2  megatron:4:tp=2,pp=2,mb=2
  shard:2@/se/fc2/Conv=RS1RR,RS1RR,R->RRRR

The model (tests/parity/torch_layers.py: standard PyTorch layers) is exported to ONNX; its
parameters' gradients for one batch are computed by PyTorch in float64 (model.double()). Each
plan trains one SGD step (momentum 0, no weight decay) with a large learning rate and saves
its parameters; the gradient it applied is (p0 - p1) / lr, exact to about 1e-7 relative
because lr·g dominates p0. Per parameter, ||g - g64|| <= 1e-5 ||g64|| (a gradient smaller than
1e-3 of the model's largest parameter gradient, one that vanishes mathematically, is held to
that instead: distance()). Where the fp32 single
device itself is further than that from float64 (an ill-conditioned parameter), that
parameter's bound is twice the single device's distance, and the report says so.

A plan that alpa-plan refuses (exit 2, a reason printed) is reported as refused, not failed;
any other non-zero exit, from the planner or from alpa-run, fails. A PLAN written `!PLAN` must
be refused by alpa-plan (search or cost) with exit 2 and no plan file: what alpa-run cannot run
is refused at planning time. Exits 1 on any failure.
"""
import argparse
import copy
import json
import os
import re
import shutil
import subprocess
import sys
import time

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", "scripts", "models"))
sys.path.insert(0, HERE)
import common  # noqa: E402
import torch_layers  # noqa: E402

MPI = ["mpirun", "--allow-run-as-root", "--oversubscribe", "--bind-to", "none",
       "--mca", "btl_vader_single_copy_mechanism", "none"]
ENV = dict(os.environ, OPENBLAS_NUM_THREADS="1", OMPI_MCA_rmaps_base_oversubscribe="1")
BOUND = 1e-5


def file_name(tensor_name: str) -> str:
    return tensor_name.replace("/", "_").replace("\\", "_").replace(":", "_") + ".npy"


def parse_plan(text: str):
    """(method, ranks, options, edits): edits are (node, strategy) pairs after '@'."""
    text, *edit_texts = text.split("@")
    edits = [tuple(e.split("=", 1)) for e in edit_texts]
    parts = text.split(":")
    method = parts[0]
    ranks = 1 if method == "one" else int(parts[1])
    opts_text = parts[1] if method == "one" and len(parts) > 1 else (parts[2] if len(parts) > 2 else "")
    opts = dict(kv.split("=") for kv in opts_text.split(",") if kv)
    return method, ranks, opts, edits


def run(cmd, timeout=600):
    start = time.time()
    r = subprocess.run(cmd, capture_output=True, text=True, env=ENV, timeout=timeout)
    r.seconds = time.time() - start
    return r


def search_args(method, ranks, opts, model, batch, out):
    cmd = ["search", model, "--batch", str(batch), "--cluster", f"local:{ranks}", "--method", method,
           "--optimizer", "sgd", "--precision", "fp32", "-o", out]
    if "mb" in opts:
        cmd += ["--microbatches", opts["mb"]]
    if method == "megatron":
        cmd += ["--tp", opts.get("tp", "1"), "--pp", opts.get("pp", "1"), "--dp", opts.get("dp", "1")]
    if "schedule" in opts:
        cmd += ["--schedule", opts["schedule"]]
    if "mesh" in opts:
        cmd += ["--logical-mesh", opts["mesh"]]
    if "layers" in opts:
        cmd += ["--layers", opts["layers"]]
    return cmd


def train_one_step(a, spec, onnx_path, data_dir, out_dir, train=True):
    """Plans and runs the plan; returns (status, message): 'ran', 'refused' or 'failed' (with
    train False, 'planned' once the plan is written, at out_dir + '.plan.json')."""
    method, ranks, opts, edits = parse_plan(spec)
    shutil.rmtree(out_dir, ignore_errors=True)
    step = ["--model", onnx_path, "--data", data_dir, "--steps", "1", "--lr", repr(a.lr), "--momentum", "0",
            "--weight-decay", "0", "--save-params", out_dir]
    if method == "one":
        r = run([os.path.join(a.bin, "alpa-run"), *step, "--batch", str(a.batch), "--optimizer", "sgd",
                 "--microbatches", opts.get("mb", "1")])
    else:
        plan_path = out_dir + ".plan.json"
        r = run([os.path.join(a.bin, "alpa-plan"), *search_args(method, ranks, opts, onnx_path, a.batch, plan_path)])
        if r.returncode == 2:
            return "refused", r.stderr.strip().splitlines()[-1] if r.stderr.strip() else "(no message)"
        if r.returncode != 0:
            return "failed", f"alpa-plan exit {r.returncode}: {r.stderr.strip()[-400:]}"
        if edits:
            status, message = edit_plan(a, plan_path, edits, onnx_path)
            if status != "ran":
                return status, message
        if not train:
            return "planned", ""
        r = run([*MPI, "-np", str(ranks), os.path.join(a.bin, "alpa-run"), "--plan", plan_path, *step])
    if r.returncode != 0:
        said = [line for line in (r.stdout + r.stderr).splitlines() if "error" in line]
        return "failed", f"alpa-run exit {r.returncode}: {said[0] if said else r.stderr.strip()[-600:]}"
    return "ran", f"{r.seconds:.1f} s"


# `alpa-plan cost`'s messages that name the one consistent value of an element.
REPAIRABLE = re.compile(r'/(tensors|strategies)/"([^"]+)": (?:spec )?"([^"]*)" differs from "([^"]*)"')


def edit_plan(a, plan_path, edits, onnx_path):
    """Sets each edited node's strategy (in whichever stage holds it) as a user editing the plan
    by hand would, then lets `alpa-plan cost` complete and validate it: a single-stage plan
    through `cost --derive-followers --json` (every follower and spec re-derived from the
    leaders); a pipeline by following cost's own messages where they name the one consistent
    spec of a tensor or a follower's strategy (up to 64 repairs). The re-costed plan is what
    runs. A plan cost refuses (exit 2), or one where the edited node's strategy did not survive
    (a follower's, re-derived from its leader), is reported as refused."""
    with open(plan_path) as f:
        plan = json.load(f)
    stages = plan["pipeline"]["stages"] if "pipeline" in plan else [plan]
    for node, strategy in edits:
        held = [st for st in stages if node in st["strategies"]]
        if not held:
            return "failed", f"the plan has no node '{node}' to edit"
        held[0]["strategies"][node] = strategy
    edited = plan_path + ".edited"
    derive = [] if "pipeline" in plan else ["--derive-followers"]
    for _ in range(64):
        with open(edited, "w") as f:
            json.dump(plan, f, indent=1)
        r = run([os.path.join(a.bin, "alpa-plan"), "cost", edited, "--model", onnx_path, "--json", *derive])
        if r.returncode == 0:
            out = json.loads(r.stdout)
            kept = out["pipeline"]["stages"] if "pipeline" in out else [out]
            for node, strategy in edits:
                if not any(st["strategies"].get(node) == strategy for st in kept):
                    return "refused", f"cost re-derives '{node}' from its leader"
            with open(plan_path, "w") as f:
                f.write(r.stdout)
            return "ran", ""
        said = r.stderr.strip().splitlines()[-1] if r.stderr.strip() else "(no message)"
        if r.returncode != 2:
            return "failed", f"alpa-plan cost exit {r.returncode}: {said}"
        m = REPAIRABLE.search(said)
        held = [st for st in stages if m and m.group(2) in st[m.group(1)]] if m and not derive else []
        if not held:
            return "refused", "cost: " + said
        held[0][m.group(1)][m.group(2)] = m.group(4)
    return "refused", "cost: still inconsistent after 64 repairs"


def microbatches_of(spec, plan_path):
    """The step's microbatches: the plan's (a search may choose them), or one device's mb=K."""
    if os.path.exists(plan_path):
        with open(plan_path) as f:
            return int(json.load(f)["microbatches"])
    return int(parse_plan(spec.lstrip("!"))[2].get("mb", "1"))


def applied_gradients(p0, out_dir, lr):
    return {name: (v.astype(np.float64) - np.load(os.path.join(out_dir, file_name(name))).astype(np.float64)) / lr
            for name, v in p0.items()}


def distance(g, ref, scale=0.0):
    """||g - ref|| relative to ||ref||, or to `scale` where that is larger: a gradient that
    vanishes mathematically (BERT's key bias: softmax ignores a constant added to every key) is
    rounding noise in float32 and float64 alike, and is held to the model's gradient scale."""
    return float(np.linalg.norm(g - ref)) / max(float(np.linalg.norm(ref)), scale, 1e-300)


class Harness:
    """One model exported once, with its float64 reference; check(spec) trains one step under
    a plan and compares. Shared by the sweep and the property test (strategy_sweep.py)."""

    def __init__(self, a):
        self.a = a
        torch.manual_seed(0)
        torch.set_num_threads(1)
        shutil.rmtree(a.workdir, ignore_errors=True)
        os.makedirs(a.workdir)
        gen = torch.Generator().manual_seed(1)
        model, inputs = torch_layers.make(a.model, a.batch, gen)
        self.onnx_path = os.path.join(a.workdir, "model.onnx")
        common.torch_export(model, inputs, self.onnx_path)
        inits = common.load_onnx_initializers(model, self.onnx_path)
        self.data_dir = os.path.join(a.workdir, "data")
        os.makedirs(self.data_dir)
        for name, t in inputs:
            np.save(os.path.join(self.data_dir, name + ".npy"), t.numpy())
        self.model, self.inputs = model, inputs
        self.p0 = {n: np.array(inits[n]) for n, _ in model.named_parameters() if n in inits}
        missing = sorted(n for n, _ in model.named_parameters() if n not in inits)
        if missing:
            raise SystemExit(f"FAIL parameters not in the ONNX file under their PyTorch names: {missing}")
        self.references, self.torch_fp32, self.bounds = {}, {}, {}
        self.runs = 0
        self.reference(1)
        print(f"{a.model}: {len(self.p0)} parameters, batch {a.batch}, float64 loss {self.loss64:.6f}, lr {a.lr:g}")

    def gradients(self, double, microbatches):
        """PyTorch's gradients of the step's loss, in float64 or float32, with the batch in
        `microbatches` parts as alpa-run takes them: each part's mean loss weighted by its share of
        the counted labels (BERT's -100 are not counted), gradients summed. Without BatchNorm the
        same as one whole batch; with it, the statistics of each part."""
        model = copy.deepcopy(self.model)
        if double:
            model = model.double()
        model.train()
        tensors = [t.double() if double and t.is_floating_point() else t for _, t in self.inputs]
        labels = tensors[-1]
        total = float((labels != -100).sum())
        rows = self.a.batch // microbatches
        loss = 0.0
        for m in range(microbatches):
            part = [t[m * rows:(m + 1) * rows] for t in tensors]
            weighted = model(*part) * (float((part[-1] != -100).sum()) / total)
            weighted.backward()
            loss += weighted.item()
        if double:
            self.loss64 = loss
        return {n: p.grad.double().numpy() for n, p in model.named_parameters()}

    def reference(self, microbatches):
        """The float64 reference for a step of `microbatches` parts (cached), and how far
        PyTorch's own float32 lands from it."""
        if microbatches not in self.references:
            ref = self.gradients(True, microbatches)
            fp32 = self.gradients(False, microbatches)
            self.references[microbatches] = ref
            self.torch_fp32[microbatches] = {n: distance(fp32[n], ref[n], self.scale(ref)) for n in ref}
        return self.references[microbatches]

    @staticmethod
    def scale(ref):
        """The model's gradient scale: 1e-3 of its largest parameter gradient's norm. A parameter
        whose float64 gradient is smaller than that is compared relative to it instead."""
        return 1e-3 * max(float(np.linalg.norm(v)) for v in ref.values())

    def bound(self, microbatches):
        """Per parameter: 1e-5, or twice the fp32 single device's own distance from float64 where
        that is larger (the single device with the same microbatches, run once per count)."""
        if microbatches not in self.bounds:
            self.bounds[microbatches] = {n: BOUND for n in self.p0}
            status, message = self.check("one" if microbatches == 1 else f"one:mb={microbatches}")
            if status != "ok" and microbatches > 1 and "exit 2" in message:
                # One device accumulates gradients only of a loss that is one mean cross-entropy
                # (an MoE's balancing term is a mean of its own); plans run it regardless.
                print(f"  note: one device refuses {microbatches} microbatches; the bound stays 1e-5")
            elif status != "ok":
                raise SystemExit(f"FAIL one device with {microbatches} microbatches: {message}")
        return self.bounds[microbatches]

    def set_bounds_from_one_device(self):
        """The fp32 single device sets the bound of a parameter it cannot itself meet."""
        self.bound(1)

    def plan(self, spec):
        """Only plans: ('planned', '', the plan as JSON) or (status, message, None)."""
        self.runs += 1
        out_dir = os.path.join(self.a.workdir, "plan%d" % self.runs)
        status, message = train_one_step(self.a, spec, self.onnx_path, self.data_dir, out_dir, train=False)
        if status != "planned":
            return status, message, None
        with open(out_dir + ".plan.json") as f:
            return status, message, json.load(f)

    def check(self, spec, quiet=False):
        """('ok' | 'refused' | 'failed', message), printing one line (unless quiet and ok)."""
        self.runs += 1
        out_dir = os.path.join(self.a.workdir, "plan%d" % self.runs)
        expect_refusal = spec.startswith("!")
        status, message = train_one_step(self.a, spec.lstrip("!"), self.onnx_path, self.data_dir, out_dir)
        if expect_refusal:
            written = os.path.exists(out_dir + ".plan.json")
            ok = status == "refused" and (not written or "@" in spec)
            print(f"{'ok     ' if ok else 'FAIL   '} {spec}: {status}: {message}")
            return ("refused" if ok else "failed"), message
        if status != "ran":
            print(f"{'refused' if status == 'refused' else 'FAIL   '} {spec}: {message}")
            return status, message
        grads = applied_gradients(self.p0, out_dir, self.a.lr)
        shutil.rmtree(out_dir, ignore_errors=True)
        k = microbatches_of(spec, out_dir + ".plan.json")
        ref = self.reference(k)
        dist = {n: distance(grads[n], ref[n], self.scale(ref)) for n in ref}
        if spec.split(":")[0] == "one":
            bounds = self.bounds.setdefault(k, {n: BOUND for n in ref})
            for n, d in dist.items():
                if d > BOUND:
                    bounds[n] = 2 * d
                    print(f"  note: one device's {n} is {d:.2e} from float64 (PyTorch's own fp32: "
                          f"{self.torch_fp32[k][n]:.2e}); its bound is {bounds[n]:.2e}")
        bounds = self.bound(k)
        bad = sorted((n for n in ref if not dist[n] <= bounds[n]), key=lambda n: -dist[n])
        worst = max(ref, key=lambda n: dist[n] / bounds[n])
        if not bad:
            if not quiet:
                print(f"ok      {spec}: {len(ref)} gradients within the bound, worst {worst} {dist[worst]:.2e} ({message})")
            return "ok", ""
        print(f"FAIL    {spec}: {len(bad)} of {len(ref)} gradients outside the bound ({message})")
        for n in bad:
            ratio = float(np.linalg.norm(grads[n])) / max(float(np.linalg.norm(ref[n])), 1e-300)
            print(f"          {n}: distance {dist[n]:.2e} (bound {bounds[n]:.1e}), norm ratio {ratio:.4f}")
        return "failed", f"{len(bad)} gradients outside the bound"


def add_common_args(ap):
    ap.add_argument("--bin", required=True)
    ap.add_argument("--model", required=True, choices=torch_layers.MODELS)
    ap.add_argument("--workdir", required=True)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--lr", type=float, default=1e4)


def main() -> int:
    ap = argparse.ArgumentParser()
    add_common_args(ap)
    ap.add_argument("plans", nargs="+")
    a = ap.parse_args()
    h = Harness(a)
    plans = a.plans if a.plans[0] == "one" else ["one", *a.plans]
    results = [h.check(spec)[0] for spec in plans]
    failures = [spec for spec, r in zip(plans, results) if r == "failed"]
    refused = results.count("refused")
    print(f"{a.model}: {results.count('ok')} plans match float64, {refused} refused by the "
          f"planner, {len(failures)} failed{': ' + ' '.join(failures) if failures else ''}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
