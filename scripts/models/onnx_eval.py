"""A tiny reference evaluator for the ONNX subset the generators emit, written on torch ops.

Used by check_shape_only.py to show that a shape-only graph, filled with a torch module's
weights, computes the same loss as the module (and as torch's own export of it). Not fast, not
general: test sizes only, and Dropout only with ratio 0.
"""
from __future__ import annotations

from typing import Dict

import numpy as np
import onnx
import onnx.numpy_helper
import torch
import torch.nn.functional as F
from onnx import helper

_DTYPES = {
    onnx.TensorProto.FLOAT: torch.float32, onnx.TensorProto.DOUBLE: torch.float64,
    onnx.TensorProto.INT64: torch.int64, onnx.TensorProto.INT32: torch.int32,
    onnx.TensorProto.BOOL: torch.bool, onnx.TensorProto.UINT8: torch.uint8,
    onnx.TensorProto.INT8: torch.int8, onnx.TensorProto.FLOAT16: torch.float16,
}


def _attrs(node) -> Dict:
    out = {}
    for a in node.attribute:
        v = helper.get_attribute_value(a)
        if isinstance(v, bytes):
            v = v.decode()
        if isinstance(v, onnx.TensorProto):
            v = torch.from_numpy(onnx.numpy_helper.to_array(v).copy())
        out[a.name] = v
    return out


def _ints(t) -> list:
    return [int(v) for v in t.reshape(-1).tolist()]


def _axis_list(node, inputs, a, idx, attr="axes"):
    if len(inputs) > idx and inputs[idx] is not None:
        return _ints(inputs[idx])
    return a.get(attr)


def run(model: onnx.ModelProto, feeds: Dict[str, torch.Tensor],
        weights: Dict[str, torch.Tensor] = None) -> torch.Tensor:
    """Evaluates the graph; `weights` fill (or override) initializers by name. Returns output 0."""
    env: Dict[str, torch.Tensor] = {}
    weights = weights or {}
    for init in model.graph.initializer:
        if init.name in weights:
            env[init.name] = weights[init.name].detach().clone()
        else:
            env[init.name] = torch.from_numpy(onnx.numpy_helper.to_array(init).copy())
    env.update(feeds)
    for node in model.graph.node:
        ins = [env[i] if i else None for i in node.input]
        outs = _eval(node, ins, _attrs(node))
        if not isinstance(outs, (list, tuple)):
            outs = [outs]
        for name, v in zip(node.output, outs):
            if name:
                env[name] = v
    return env[model.graph.output[0].name]


def _eval(node, x, a):
    op = node.op_type
    if op == "Constant":
        return a["value"]
    if op in ("Identity",):
        return x[0]
    if op == "Dropout":
        ratio = float(x[1]) if len(x) > 1 and x[1] is not None else 0.5
        training = len(x) > 2 and x[2] is not None and bool(x[2])
        if training and ratio != 0.0:
            raise NotImplementedError("Dropout with ratio > 0 in training mode")
        return [x[0], torch.ones_like(x[0], dtype=torch.bool)]
    binary = {"Add": torch.add, "Sub": torch.sub, "Mul": torch.mul, "Pow": torch.pow,
              "Equal": torch.eq, "Less": torch.lt, "Greater": torch.gt}
    if op in binary:
        return binary[op](x[0], x[1])
    if op == "Div":
        if x[0].is_floating_point():
            return x[0] / x[1]
        return torch.div(x[0], x[1], rounding_mode="trunc")
    unary = {"Sqrt": torch.sqrt, "Neg": torch.neg, "Exp": torch.exp, "Log": torch.log,
             "Erf": torch.erf, "Tanh": torch.tanh, "Relu": torch.relu, "Sigmoid": torch.sigmoid}
    if op in unary:
        return unary[op](x[0])
    if op == "Where":
        return torch.where(x[0].bool(), x[1], x[2])
    if op == "Cast":
        return x[0].to(_DTYPES[a["to"]])
    if op == "Clip":
        lo = x[1] if len(x) > 1 else None
        hi = x[2] if len(x) > 2 else None
        return torch.clamp(x[0], min=lo, max=hi)
    if op == "Softmax":
        return torch.softmax(x[0], dim=a.get("axis", -1))
    if op == "LogSoftmax":
        return torch.log_softmax(x[0], dim=a.get("axis", -1))
    if op == "LayerNormalization":
        axis = a.get("axis", -1) % x[0].dim()
        shape = x[0].shape[axis:]
        return F.layer_norm(x[0], shape, x[1], x[2] if len(x) > 2 else None, a.get("epsilon", 1e-5))
    if op == "BatchNormalization":
        X, scale, bias, mean, var = x
        eps, momentum = a.get("epsilon", 1e-5), a.get("momentum", 0.9)
        if a.get("training_mode", 0):
            dims = [0] + list(range(2, X.dim()))
            bm = X.mean(dim=dims)
            bv = X.var(dim=dims, unbiased=False)
            shape = [1, -1] + [1] * (X.dim() - 2)
            y = (X - bm.view(shape)) / torch.sqrt(bv.view(shape) + eps) * scale.view(shape) \
                + bias.view(shape)
            return [y, mean * momentum + bm * (1 - momentum), var * momentum + bv * (1 - momentum)]
        return F.batch_norm(X, mean, var, scale, bias, False, 0.0, eps)
    if op == "MatMul":
        return torch.matmul(x[0], x[1])
    if op == "Gemm":
        A = x[0].t() if a.get("transA", 0) else x[0]
        Bm = x[1].t() if a.get("transB", 0) else x[1]
        y = a.get("alpha", 1.0) * (A @ Bm)
        if len(x) > 2 and x[2] is not None:
            y = y + a.get("beta", 1.0) * x[2]
        return y
    if op == "Einsum":
        return torch.einsum(a["equation"], *x)
    if op == "Conv":
        pads = a.get("pads", [0, 0, 0, 0])
        X = x[0]
        if pads[:2] != pads[2:]:
            X = F.pad(X, [pads[1], pads[3], pads[0], pads[2]])
            pads = [0, 0, 0, 0]
        return F.conv2d(X, x[1], x[2] if len(x) > 2 else None, stride=a.get("strides", 1),
                        padding=pads[:2], dilation=a.get("dilations", 1), groups=a.get("group", 1))
    if op == "MaxPool":
        pads = a.get("pads", [0, 0, 0, 0])
        assert pads[:2] == pads[2:]
        y = F.max_pool2d(x[0], a["kernel_shape"], a.get("strides", 1), pads[:2],
                         a.get("dilations", 1), bool(a.get("ceil_mode", 0)))
        return [y, None]
    if op == "AveragePool":
        pads = a.get("pads", [0, 0, 0, 0])
        return F.avg_pool2d(x[0], a["kernel_shape"], a.get("strides", 1), pads[:2],
                            bool(a.get("ceil_mode", 0)), bool(a.get("count_include_pad", 0)))
    if op == "GlobalAveragePool":
        return x[0].mean(dim=list(range(2, x[0].dim())), keepdim=True)
    if op == "Flatten":
        axis = a.get("axis", 1)
        return x[0].reshape(int(np.prod(x[0].shape[:axis])), -1)
    if op == "Shape":
        return torch.tensor(list(x[0].shape), dtype=torch.int64)
    if op == "Gather":
        axis = a.get("axis", 0)
        idx = x[1]
        if idx.dim() == 0:
            return x[0].select(axis, int(idx))
        return torch.index_select(x[0], axis, idx.reshape(-1)).reshape(
            *x[0].shape[:axis], *idx.shape, *x[0].shape[axis + 1:])
    if op == "Unsqueeze":
        y = x[0]
        axes = sorted(ax % (y.dim() + len(_ints(x[1]))) for ax in _ints(x[1]))
        for ax in axes:
            y = y.unsqueeze(ax)
        return y
    if op == "Squeeze":
        axes = _axis_list(node, x, a, 1)
        if axes is None:
            return x[0].squeeze()
        y = x[0]
        for ax in sorted((ax % y.dim() for ax in axes), reverse=True):
            y = y.squeeze(ax)
        return y
    if op == "Concat":
        return torch.cat(x, dim=a["axis"])
    if op == "Reshape":
        shape = _ints(x[1])
        shape = [x[0].shape[i] if s == 0 and not a.get("allowzero", 0) else s
                 for i, s in enumerate(shape)]
        return x[0].reshape(shape)
    if op == "Transpose":
        perm = a.get("perm", list(reversed(range(x[0].dim()))))
        return x[0].permute(*perm)
    if op == "Split":
        sizes = _ints(x[1])
        return list(torch.split(x[0], sizes, dim=a.get("axis", 0)))
    if op == "Slice":
        y = x[0]
        starts, ends = _ints(x[1]), _ints(x[2])
        axes = _ints(x[3]) if len(x) > 3 and x[3] is not None else list(range(len(starts)))
        steps = _ints(x[4]) if len(x) > 4 and x[4] is not None else [1] * len(starts)
        idx = [slice(None)] * y.dim()
        for s, e, ax, st in zip(starts, ends, axes, steps):
            assert st == 1
            n = y.shape[ax]
            s = max(0, min(n, s + n if s < 0 else s))
            e = max(0, min(n, e + n if e < 0 else e))
            idx[ax] = slice(s, e)
        return y[tuple(idx)]
    if op == "Expand":
        return x[0] * torch.ones(_ints(x[1]), dtype=x[0].dtype)
    if op == "ConstantOfShape":
        v = a.get("value", torch.zeros(1))
        return torch.full(_ints(x[0]), v.reshape(-1)[0].item(), dtype=v.dtype)
    if op == "Range":
        return torch.arange(x[0].item(), x[1].item(), x[2].item(), dtype=x[0].dtype)
    if op in ("ReduceSum", "ReduceMean", "ReduceMax"):
        axes = _axis_list(node, x, a, 1) if op == "ReduceSum" else a.get("axes")
        keep = bool(a.get("keepdims", 1))
        if axes is None or len(axes) == 0:
            if op == "ReduceSum" and a.get("noop_with_empty_axes", 0):
                return x[0]
            axes = list(range(x[0].dim()))
        if op == "ReduceSum":
            return x[0].sum(dim=axes, keepdim=keep)
        if op == "ReduceMean":
            return x[0].mean(dim=axes, keepdim=keep)
        return x[0].amax(dim=axes, keepdim=keep)
    if op == "CumSum":
        axis = int(x[1])
        y = x[0].flip(axis) if a.get("reverse", 0) else x[0]
        c = torch.cumsum(y, dim=axis)
        if a.get("exclusive", 0):
            c = c - y
        return c.flip(axis) if a.get("reverse", 0) else c
    if op == "OneHot":
        depth = int(x[1].reshape(-1)[0])
        off, on = x[2][0], x[2][1]
        idx = torch.where(x[0] < 0, x[0] + depth, x[0]).long()
        oh = F.one_hot(idx, depth)
        y = torch.where(oh.bool(), on, off)
        axis = a.get("axis", -1)
        return y if axis == -1 else y.movedim(-1, axis)
    if op == "TopK":
        k = int(x[1].reshape(-1)[0])
        v, i = torch.topk(x[0], k, dim=a.get("axis", -1), largest=bool(a.get("largest", 1)),
                          sorted=bool(a.get("sorted", 1)))
        return [v, i]
    if op == "SoftmaxCrossEntropyLoss":
        logits, target = x[0], x[1]
        if logits.dim() > 2:
            logits = logits.movedim(1, -1).reshape(-1, logits.shape[1])
            target = target.reshape(-1)
        return F.cross_entropy(logits, target, reduction=a.get("reduction", "mean"),
                               ignore_index=a.get("ignore_index", -100))
    raise NotImplementedError(op)
