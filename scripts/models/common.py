"""Shared helpers for the model generators: torch export, sidecar JSON, and a small ONNX builder
for the shape-only graphs.

Conventions (the C++ importer relies on them):
  * opset 17, the single graph output is the scalar float loss named "loss";
  * torch exports run in TRAINING mode without constant folding, with dim 0 of every input named
    "batch" unless a static batch is asked for;
  * shape-only initializers carry name, FLOAT data type and dims, and no data at all;
    integer constants (reshape targets, axes) always carry data.
"""
from __future__ import annotations

import collections
import dataclasses
import json
import math
import os
import warnings
from typing import Dict, Iterable, List, Sequence, Tuple

import numpy as np
import onnx
from onnx import TensorProto, helper

OPSET = 17

# The operator vocabulary the C++ importer supports (planner/graph/op_kind.cc, minus Not, which
# we never emit). Every generated graph is checked against it.
ALLOWED_OPS = frozenset("""
    Add Sub Mul Div Pow Sqrt Neg Exp Log Erf Tanh Relu Sigmoid Softmax LogSoftmax
    LayerNormalization BatchNormalization MatMul Gemm Einsum Conv MaxPool AveragePool
    GlobalAveragePool Flatten Reshape Transpose Gather Concat Split Slice Squeeze Unsqueeze Expand
    ReduceSum ReduceMean ReduceMax Where Equal Less Greater Cast Clip CumSum OneHot TopK Identity
    Dropout SoftmaxCrossEntropyLoss Constant ConstantOfShape Shape Range
""".split())

# Models below this many parameters are exported by torch with weights by default.
TORCH_EXPORT_LIMIT = 50_000_000


def config_dict(cfg) -> dict:
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in dataclasses.asdict(cfg).items()}


def ceil_div(a: int, b: int) -> int:
    return -(-a // b)


# --------------------------------------------------------------------------------------------
# ONNX inspection


def op_histogram(model: onnx.ModelProto) -> Dict[str, int]:
    return dict(sorted(collections.Counter(n.op_type for n in model.graph.node).items()))


def disallowed_ops(model: onnx.ModelProto) -> List[str]:
    return sorted({n.op_type for n in model.graph.node if n.op_type not in ALLOWED_OPS})


def check_op_vocabulary(model: onnx.ModelProto, what: str) -> None:
    bad = disallowed_ops(model)
    if bad:
        raise RuntimeError(f"{what}: uses operators outside the supported list: {', '.join(bad)}")


def initializer_counts(model: onnx.ModelProto, parameter_names: Iterable[str]) -> Tuple[int, int]:
    """(parameter elements, floating buffer elements) of the graph's initializers, by name."""
    params = set(parameter_names)
    p = b = 0
    for init in model.graph.initializer:
        if init.data_type not in (TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.BFLOAT16,
                                  TensorProto.DOUBLE):
            continue
        n = int(np.prod(init.dims, dtype=np.int64)) if len(init.dims) else 1
        if init.name in params:
            p += n
        else:
            b += n
    return p, b


def graph_inputs(model: onnx.ModelProto) -> List[dict]:
    inits = {i.name for i in model.graph.initializer}
    out = []
    for vi in model.graph.input:
        if vi.name in inits:
            continue
        tt = vi.type.tensor_type
        shape = [d.dim_param if d.HasField("dim_param") else d.dim_value for d in tt.shape.dim]
        dtype = helper.tensor_dtype_to_np_dtype(tt.elem_type).name
        out.append({"name": vi.name, "shape": shape, "dtype": dtype})
    return out


def write_sidecar(onnx_path: str, meta: dict) -> str:
    path = os.path.splitext(onnx_path)[0] + ".json"
    with open(path, "w") as f:
        json.dump(meta, f, indent=2)
        f.write("\n")
    return path


# --------------------------------------------------------------------------------------------
# torch export


def torch_export(model, inputs: Sequence[Tuple[str, "object"]], path: str,
                 static_batch: bool = False) -> onnx.ModelProto:
    """Exports `model(*inputs)` (which returns the scalar loss) in training mode, opset 17."""
    import torch

    names = [n for n, _ in inputs]
    dynamic_axes = None if static_batch else {n: {0: "batch"} for n in names}
    model.train()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with torch.no_grad():
            torch.onnx.export(
                model, tuple(t for _, t in inputs), path,
                opset_version=OPSET,
                training=torch.onnx.TrainingMode.TRAINING,
                do_constant_folding=False,
                input_names=names,
                output_names=["loss"],
                dynamic_axes=dynamic_axes,
            )
    return onnx.load(path)


def torch_param_count(model) -> int:
    return sum(p.numel() for p in model.parameters())


def torch_buffer_count(model) -> int:
    """Elements of floating buffers (causal masks, BatchNorm running statistics)."""
    return sum(b.numel() for b in model.buffers() if b.is_floating_point())


# --------------------------------------------------------------------------------------------
# A small builder for the shape-only graphs


class GraphBuilder:
    """Writes an ONNX graph node by node with static shapes.

    Parameters and buffers are FLOAT initializers holding dims only (no data); their names are the
    torch state_dict names. Integer constants (reshape targets, axes, split sizes) are INT64
    initializers with data; floating scalars are Constant nodes (never initializers, so that the
    importer does not take them for parameters).
    """

    def __init__(self, name: str):
        self.name = name
        self.nodes: List[onnx.NodeProto] = []
        self.initializers: List[TensorProto] = []
        self.inputs: List[onnx.ValueInfoProto] = []
        self.param_names: List[str] = []
        self.buffer_names: List[str] = []
        self.param_count = 0
        self.buffer_count = 0
        self._scope: List[str] = []
        self._counter: Dict[str, int] = collections.defaultdict(int)
        self._int_consts: Dict[Tuple[int, ...], str] = {}
        self._names = set()

    # -- naming
    class _Scope:
        def __init__(self, b: "GraphBuilder", name: str):
            self.b, self.name = b, name

        def __enter__(self):
            self.b._scope.append(self.name)

        def __exit__(self, *exc):
            self.b._scope.pop()

    def scope(self, name: str) -> "GraphBuilder._Scope":
        return GraphBuilder._Scope(self, name)

    def _fresh(self, op_type: str) -> str:
        prefix = "/" + "/".join(self._scope) + "/" if self._scope else "/"
        base = prefix + op_type
        k = self._counter[base]
        self._counter[base] += 1
        return base if k == 0 else f"{base}_{k}"

    # -- values
    def input(self, name: str, elem_type: int, shape: Sequence) -> str:
        self.inputs.append(helper.make_tensor_value_info(name, elem_type, list(shape)))
        return name

    def _shape_only(self, name: str, dims: Sequence[int]) -> str:
        if name in self._names:
            raise ValueError(f"initializer {name!r} defined twice")
        self._names.add(name)
        t = TensorProto()
        t.name = name
        t.data_type = TensorProto.FLOAT
        t.dims.extend(int(d) for d in dims)
        self.initializers.append(t)
        return name

    def param(self, name: str, dims: Sequence[int]) -> str:
        self.param_names.append(name)
        self.param_count += math.prod(dims)
        return self._shape_only(name, dims)

    def buffer(self, name: str, dims: Sequence[int]) -> str:
        self.buffer_names.append(name)
        self.buffer_count += math.prod(dims)
        return self._shape_only(name, dims)

    def ints(self, values: Sequence[int]) -> str:
        """A 1-D INT64 constant (cached), e.g. a reshape target or an axes list."""
        key = tuple(int(v) for v in values)
        if key not in self._int_consts:
            if len(key) <= 8:
                name = "const_i64_" + "_".join(str(v).replace("-", "m") for v in key)
            else:
                name = f"const_i64_len{len(key)}_{len(self._int_consts)}"
            t = helper.make_tensor(name, TensorProto.INT64, [len(key)], list(key))
            self.initializers.append(t)
            self._int_consts[key] = name
        return self._int_consts[key]

    def scalar(self, value, elem_type: int = TensorProto.FLOAT) -> str:
        """A 0-d Constant node."""
        out = self._fresh("Constant") + "_output_0"
        t = helper.make_tensor("value", elem_type, [], [value])
        self.nodes.append(helper.make_node("Constant", [], [out], name=out[:-9], value=t))
        return out

    def op(self, op_type: str, inputs: Sequence[str], n_out: int = 1, **attrs):
        name = self._fresh(op_type)
        outs = [f"{name}_output_{i}" for i in range(n_out)]
        self.nodes.append(helper.make_node(op_type, list(inputs), outs, name=name, **attrs))
        return outs[0] if n_out == 1 else outs

    # -- common composites (mirroring what torch 1.13 emits)
    def linear(self, x: str, prefix: str, in_f: int, out_f: int, bias: bool = True) -> str:
        """nn.Linear on a >2-D input: MatMul(x, Transpose(W)) + b, W is [out, in]."""
        with self.scope(prefix.rsplit(".", 1)[-1]):
            w = self.param(prefix + ".weight", [out_f, in_f])
            wt = self.op("Transpose", [w], perm=[1, 0])
            y = self.op("MatMul", [x, wt])
            if bias:
                b = self.param(prefix + ".bias", [out_f])
                y = self.op("Add", [b, y])
        return y

    def layer_norm(self, x: str, prefix: str, dim: int, eps: float) -> str:
        with self.scope(prefix.rsplit(".", 1)[-1]):
            w = self.param(prefix + ".weight", [dim])
            b = self.param(prefix + ".bias", [dim])
            return self.op("LayerNormalization", [x, w, b], axis=-1, epsilon=eps)

    def dropout(self, x: str, p: float) -> str:
        ratio = self.scalar(float(p))
        training = self.scalar(True, TensorProto.BOOL)
        return self.op("Dropout", [x, ratio, training], n_out=2)[0]

    def gelu(self, x: str) -> str:
        """Exact GELU as torch 1.13 exports it at opset 17: x * (erf(x / sqrt 2) + 1) * 0.5."""
        d = self.op("Div", [x, self.scalar(math.sqrt(2.0))])
        e = self.op("Erf", [d])
        a = self.op("Add", [e, self.scalar(1.0)])
        m = self.op("Mul", [x, a])
        return self.op("Mul", [m, self.scalar(0.5)])

    def reshape(self, x: str, shape: Sequence[int]) -> str:
        return self.op("Reshape", [x, self.ints(shape)])

    def cross_entropy(self, logits2d: str, labels1d: str, ignore_index: int = -100) -> str:
        return self.op("SoftmaxCrossEntropyLoss", [logits2d, labels1d], reduction="mean",
                       ignore_index=ignore_index)

    def build(self, loss: str, doc: str = "") -> onnx.ModelProto:
        # Rename the final value to "loss".
        for n in self.nodes:
            for i, o in enumerate(n.output):
                if o == loss:
                    n.output[i] = "loss"
        out = helper.make_tensor_value_info("loss", TensorProto.FLOAT, [])
        graph = helper.make_graph(self.nodes, self.name, self.inputs, [out], self.initializers,
                                  doc_string=doc)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                                  producer_name="alpa-plan shape-only", producer_version="1")
        model.ir_version = 8
        helper.set_model_props(model, {"param_count": str(self.param_count),
                                       "buffer_count": str(self.buffer_count)})
        return model


def fill_shape_only(model: onnx.ModelProto, value: float = 0.0) -> onnx.ModelProto:
    """A copy whose data-less FLOAT initializers hold `value` (raw data), so that
    onnx.checker.check_model, which requires exactly one data field, accepts it. Test sizes only."""
    m = onnx.ModelProto()
    m.CopyFrom(model)
    for init in m.graph.initializer:
        if init.data_type == TensorProto.FLOAT and not init.raw_data and not init.float_data:
            n = int(np.prod(init.dims, dtype=np.int64)) if len(init.dims) else 1
            init.raw_data = np.full(n, value, dtype=np.float32).tobytes()
    return m


def check_static_shapes(model: onnx.ModelProto) -> None:
    """Strict ONNX shape inference over the shape-only graph: every shape is consistent and the
    loss is a scalar. Works on data-less initializers (only dims are read)."""
    inferred = onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True,
                                                 data_prop=True)
    out = inferred.graph.output[0].type.tensor_type
    if out.elem_type != TensorProto.FLOAT or len(out.shape.dim) != 0:
        raise RuntimeError("shape-only graph: the loss is not a scalar float")


def load_onnx_initializers(model, onnx_path: str) -> dict:
    """Copies the ONNX file's initializers into the torch module's state (by state_dict name),
    so PyTorch and alpa-run start from exactly the exported values (tracing in training mode
    may touch buffers). Returns {name: numpy array} of all initializers."""
    import numpy as np
    import onnx.numpy_helper
    import torch

    inits = {t.name: onnx.numpy_helper.to_array(t) for t in onnx.load(onnx_path).graph.initializer}
    with torch.no_grad():
        for name, value in model.state_dict().items():
            if name in inits:
                value.copy_(torch.from_numpy(np.array(inits[name])))
    return inits
