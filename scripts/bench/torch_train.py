#!/usr/bin/env python3
"""PyTorch side of scripts/bench/train_gpt.sh: trains the same ONNX-exported model's torch module
for N SGD steps on the same data and prints JSON {"step_ms": [...], "losses": [...]}."""
import json
import os
import sys
import time

import numpy as np
import onnx
import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "models"))
import common  # noqa: E402
import generate  # noqa: E402


def main() -> int:
    family, onnx_path, data_dir, steps, threads = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
    overrides = json.loads(sys.argv[6]) if len(sys.argv) > 6 else {}
    torch.set_num_threads(threads)
    cfg = generate.make_config(family, "test", overrides)
    model = generate.FAMILIES[family].make_model(cfg)
    inits = common.load_onnx_initializers(model, onnx_path)
    names = [i.name for i in onnx.load(onnx_path).graph.input if i.name not in inits]
    arrays = [torch.from_numpy(np.load(os.path.join(data_dir, n + ".npy"))) for n in names]
    batch = json.load(open(onnx_path[:-5] + ".json"))["batch"]
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    model.train()
    step_ms, losses = [], []
    for step in range(steps):
        inputs = [a[(step * batch) % a.shape[0]:][:batch] for a in arrays]
        start = time.perf_counter()
        opt.zero_grad()
        loss = model(*inputs)
        loss.backward()
        opt.step()
        step_ms.append((time.perf_counter() - start) * 1000)
        losses.append(loss.item())
    print(json.dumps({"step_ms": step_ms, "losses": losses}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
