"""An ONNX graph as a torch module, so litert-torch can turn an ONNX source into TFLite.

onnx2torch (last released 2024) fails on graphs from the current torch exporter
(`Reshape` opset 19, `allowzero=1`), so this small interpreter maps the plain CNN/MLP
ops onto torch functions instead. Shape arithmetic on static shapes is folded to
numpy constants (through onnx's reference evaluator), so tracing sees no data-dependent
branches. An op outside the table stops the conversion with `Unsupported` naming the
op type and the node.
"""

from __future__ import annotations

import numpy as np
import onnx
import torch
import torch.nn.functional as F  # noqa: N812
from onnx import helper, numpy_helper

from toolkit.errors import Unsupported

# ops whose inputs may be dynamic (torch tensors); all ops fold when every input is constant
_FOLD_ONLY = {"Shape", "Constant", "ConstantOfShape", "Range", "Size"}


def _attrs(node) -> dict:
    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def _t(value, like=None):
    if isinstance(value, torch.Tensor):
        return value
    tensor = torch.from_numpy(np.ascontiguousarray(value))
    if like is not None and tensor.is_floating_point() and like.is_floating_point():
        tensor = tensor.to(like.dtype)
    return tensor


def _ints(value) -> list[int]:
    if isinstance(value, torch.Tensor):
        raise Unsupported("a shape computed from tensor data cannot be traced to TFLite")
    return [int(v) for v in np.asarray(value).reshape(-1)]


def _pads(pads, rank):
    """ONNX pads [b1..bn, e1..en] -> F.pad order (last axis first)."""
    begins, ends = pads[:rank], pads[rank:]
    order = []
    for axis in reversed(range(rank)):
        order += [begins[axis], ends[axis]]
    return order


def _conv(node, x, w, b=None):
    a = _attrs(node)
    rank = w.dim() - 2
    if a.get("auto_pad", b"NOTSET") not in (b"NOTSET", b"VALID", "NOTSET", "VALID"):
        raise Unsupported(f"ONNX op Conv (node {node.name!r}) with auto_pad={a['auto_pad']!r} is not supported")
    pads = list(a.get("pads", [0] * 2 * rank))
    if pads[:rank] != pads[rank:]:
        x, pads = F.pad(x, _pads(pads, rank)), [0] * 2 * rank
    conv = (F.conv1d, F.conv2d, F.conv3d)[rank - 1]
    return conv(x, w, b, stride=a.get("strides", 1), padding=pads[:rank], dilation=a.get("dilations", 1),
                groups=a.get("group", 1))


def _pool(node, x, kind):
    a = _attrs(node)
    kernel = a["kernel_shape"]
    rank = len(kernel)
    pads = list(a.get("pads", [0] * 2 * rank))
    if pads[:rank] != pads[rank:]:
        raise Unsupported(f"ONNX op {node.op_type} (node {node.name!r}) with asymmetric pads is not supported")
    strides = a.get("strides", [1] * rank)
    ceil = bool(a.get("ceil_mode", 0))
    if kind == "max":
        pool = (F.max_pool1d, F.max_pool2d, F.max_pool3d)[rank - 1]
        return pool(x, kernel, strides, pads[:rank], a.get("dilations", 1), ceil_mode=ceil)
    pool = (F.avg_pool1d, F.avg_pool2d, F.avg_pool3d)[rank - 1]
    return pool(x, kernel, strides, pads[:rank], ceil_mode=ceil, count_include_pad=bool(a.get("count_include_pad", 0)))


def _gemm(node, a_, b_, c=None):
    a = _attrs(node)
    if a.get("transA"):
        a_ = a_.t()
    if a.get("transB"):
        b_ = b_.t()
    out = a.get("alpha", 1.0) * (a_ @ b_)
    return out if c is None else out + a.get("beta", 1.0) * c


def _reshape(node, x, shape):
    dims = _ints(shape)
    if not _attrs(node).get("allowzero", 0):
        dims = [x.shape[i] if d == 0 else d for i, d in enumerate(dims)]
    return x.reshape(dims)


def _axes(node, values, default=None):
    if len(values) > 1 and values[1] is not None:
        return _ints(values[1])
    return list(_attrs(node).get("axes", default or []))


def _reduce(node, values, fn):
    a = _attrs(node)
    axes = _axes(node, values) or list(range(values[0].dim()))
    return fn(values[0], dim=axes, keepdim=bool(a.get("keepdims", 1)))


def _slice(node, x, starts, ends, axes=None, steps=None):
    starts, ends = _ints(starts), _ints(ends)
    axes = _ints(axes) if axes is not None else list(range(len(starts)))
    steps = _ints(steps) if steps is not None else [1] * len(starts)
    index = [slice(None)] * x.dim()
    for start, end, axis, step in zip(starts, ends, axes, steps, strict=True):
        if step < 1:
            raise Unsupported(f"ONNX op Slice (node {node.name!r}) with a negative step is not supported")
        size = x.shape[axis]
        index[axis] = slice(max(min(start, size), -size), max(min(end, size), -size - 1), step)
    return x[tuple(index)]


def _torch_dtype(onnx_type: int):
    return torch.from_numpy(np.zeros(0, helper.tensor_dtype_to_np_dtype(onnx_type))).dtype


OPS = {
    "Conv": _conv,
    "Relu": lambda n, x: F.relu(x),
    "LeakyRelu": lambda n, x: F.leaky_relu(x, _attrs(n).get("alpha", 0.01)),
    "Elu": lambda n, x: F.elu(x, _attrs(n).get("alpha", 1.0)),
    "Sigmoid": lambda n, x: torch.sigmoid(x),
    "Tanh": lambda n, x: torch.tanh(x),
    "HardSigmoid": lambda n, x: torch.clamp(_attrs(n).get("alpha", 0.2) * x + _attrs(n).get("beta", 0.5), 0, 1),
    "HardSwish": lambda n, x: F.hardswish(x),
    "Softplus": lambda n, x: F.softplus(x),
    "Gelu": lambda n, x: F.gelu(x, approximate=_attrs(n).get("approximate", "none")),
    "Erf": lambda n, x: torch.erf(x),
    "Exp": lambda n, x: torch.exp(x),
    "Log": lambda n, x: torch.log(x),
    "Sqrt": lambda n, x: torch.sqrt(x),
    "Neg": lambda n, x: -x,
    "Abs": lambda n, x: torch.abs(x),
    "Reciprocal": lambda n, x: 1.0 / x,
    "Clip": lambda n, x, lo=None, hi=None: torch.clamp(
        x, _scalar(lo, _attrs(n).get("min")), _scalar(hi, _attrs(n).get("max"))),
    "Add": lambda n, a, b: a + b,
    "Sub": lambda n, a, b: a - b,
    "Mul": lambda n, a, b: a * b,
    "Div": lambda n, a, b: a / b,
    "Pow": lambda n, a, b: torch.pow(a, b),
    "Max": lambda n, *xs: _fold(torch.maximum, xs),
    "Min": lambda n, *xs: _fold(torch.minimum, xs),
    "Sum": lambda n, *xs: _fold(torch.add, xs),
    "MatMul": lambda n, a, b: torch.matmul(a, b),
    "Gemm": _gemm,
    "Softmax": lambda n, x: F.softmax(x, _attrs(n).get("axis", -1)),
    "LogSoftmax": lambda n, x: F.log_softmax(x, _attrs(n).get("axis", -1)),
    "MaxPool": lambda n, x: _pool(n, x, "max"),
    "AveragePool": lambda n, x: _pool(n, x, "avg"),
    "GlobalAveragePool": lambda n, x: x.mean(dim=tuple(range(2, x.dim())), keepdim=True),
    "GlobalMaxPool": lambda n, x: x.amax(dim=tuple(range(2, x.dim())), keepdim=True),
    "Flatten": lambda n, x: x.reshape(int(np.prod(x.shape[: _attrs(n).get("axis", 1)])), -1),
    "Reshape": _reshape,
    "Transpose": lambda n, x: x.permute(*_attrs(n).get("perm", list(reversed(range(x.dim()))))),
    "Concat": lambda n, *xs: torch.cat(list(xs), _attrs(n)["axis"]),
    "Squeeze": lambda n, *v: v[0].squeeze(tuple(_axes(n, v))) if _axes(n, v) else v[0].squeeze(),
    "Unsqueeze": lambda n, *v: _unsqueeze(v[0], _axes(n, v)),
    "Identity": lambda n, x: x,
    "Dropout": lambda n, x, *_: x,
    "Cast": lambda n, x: x.to(_torch_dtype(_attrs(n)["to"])),
    "BatchNormalization": lambda n, x, s, b, m, v: F.batch_norm(x, m, v, s, b, False, 0.0, _attrs(n).get("epsilon", 1e-5)),
    "LayerNormalization": lambda n, x, s, b=None: F.layer_norm(
        x, x.shape[_attrs(n).get("axis", -1):], s, b, _attrs(n).get("epsilon", 1e-5)),
    "ReduceMean": lambda n, *v: _reduce(n, v, torch.mean),
    "ReduceSum": lambda n, *v: _reduce(n, v, torch.sum),
    "ReduceMax": lambda n, *v: _reduce(n, v, torch.amax),
    "Slice": _slice,
    "Gather": lambda n, x, i: torch.index_select(x, _attrs(n).get("axis", 0), _t(i).reshape(-1).long()).reshape(
        *x.shape[: _attrs(n).get("axis", 0) % x.dim()], *np.shape(i), *x.shape[_attrs(n).get("axis", 0) % x.dim() + 1:]),
    "Pad": lambda n, x, pads, value=None, *_: F.pad(x, _pads(_ints(pads), x.dim()), value=_scalar(value, 0.0)),
}


def _scalar(value, default):
    if value is None:
        return default
    if isinstance(value, torch.Tensor):
        return value
    return float(np.asarray(value).reshape(-1)[0])


def _fold(fn, xs):
    result = xs[0]
    for x in xs[1:]:
        result = fn(result, x)
    return result


def _unsqueeze(x, axes):
    for axis in sorted(a % (x.dim() + len(axes)) for a in axes):
        x = x.unsqueeze(axis)
    return x


def check_convertible(model: onnx.ModelProto) -> None:
    """Name the first op this converter cannot lower, before any work."""
    for node in model.graph.node:
        if node.domain not in ("", "ai.onnx") or (node.op_type not in OPS and node.op_type not in _FOLD_ONLY):
            domain = f"{node.domain}." if node.domain not in ("", "ai.onnx") else ""
            raise Unsupported(
                f"ONNX op {domain}{node.op_type} (node {node.name or node.output[0]!r}) cannot be converted to TFLite "
                "(ONNX->TFLite covers plain CNN/MLP graphs; export the original PyTorch model instead)"
            )


class OnnxModule(torch.nn.Module):
    """Runs an ONNX graph node by node with torch functions; weights are buffers."""

    def __init__(self, model: onnx.ModelProto):
        super().__init__()
        check_convertible(model)
        graph = model.graph
        self.nodes = list(graph.node)
        self.opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 18)
        constants = {init.name: numpy_helper.to_array(init) for init in graph.initializer}
        self.input_names = [i.name for i in graph.input if i.name not in constants]
        self.output_names = [o.name for o in graph.output]
        self._constants: dict[str, np.ndarray] = {}
        self._buffers_of: dict[str, str] = {}
        for index, (name, array) in enumerate(constants.items()):
            if array.dtype.kind == "f" and array.size > 1:
                self.register_buffer(f"w{index}", torch.from_numpy(array.copy()))
                self._buffers_of[name] = f"w{index}"
            else:
                self._constants[name] = array

    def forward(self, *args):
        values: dict = dict(self._constants)
        values.update({name: getattr(self, buffer) for name, buffer in self._buffers_of.items()})
        values.update(zip(self.input_names, args, strict=True))
        for node in self.nodes:
            inputs = [values[name] if name else None for name in node.input]
            try:
                outputs = self._run(node, inputs)
            except Unsupported:
                raise
            except Exception as error:
                text = (str(error).strip().splitlines() or [type(error).__name__])[0][:200]
                raise Unsupported(
                    f"ONNX op {node.op_type} (node {node.name or node.output[0]!r}) cannot be converted: {text}"
                ) from None
            values.update(zip(node.output, outputs, strict=False))
        results = tuple(_t(values[name]) for name in self.output_names)
        return results[0] if len(results) == 1 else results

    def _run(self, node, inputs) -> list:
        if node.op_type == "Shape" and isinstance(inputs[0], torch.Tensor):
            a = _attrs(node)
            dims = list(inputs[0].shape)[a.get("start", 0): a.get("end", None)]
            return [np.array([int(d) for d in dims], dtype=np.int64)]
        if all(not isinstance(v, torch.Tensor) for v in inputs):
            return self._fold(node, inputs)
        if node.op_type in _FOLD_ONLY:
            raise Unsupported(f"ONNX op {node.op_type} (node {node.name!r}) on tensor data cannot be traced to TFLite")
        tensors = [v for v in inputs if isinstance(v, torch.Tensor)]
        like = next((t for t in tensors if t.is_floating_point()), tensors[0])
        if node.op_type in ("Reshape", "Slice", "Squeeze", "Unsqueeze", "Pad", "Clip", "Gather", "ReduceMean",
                            "ReduceSum", "ReduceMax"):
            args = [inputs[0], *inputs[1:]]  # shape-like arguments stay numpy
            if isinstance(args[0], np.ndarray):
                args[0] = _t(args[0], like)
        else:
            args = [None if v is None else _t(v, like) for v in inputs]
        result = OPS[node.op_type](node, *args)
        return list(result) if isinstance(result, tuple) else [result]

    def _fold(self, node, inputs) -> list:
        from onnx.reference import ReferenceEvaluator

        graph_node = helper.make_node(node.op_type, [f"i{k}" if v is not None else "" for k, v in enumerate(inputs)],
                                      list(node.output), name=node.name, domain=node.domain)
        graph_node.attribute.extend(node.attribute)
        evaluator = ReferenceEvaluator(graph_node, opsets={"": self.opset})
        feeds = {f"i{k}": v for k, v in enumerate(inputs) if v is not None}
        return list(evaluator.run(None, feeds))


def onnx_to_torch(path) -> OnnxModule:
    """Load an ONNX file (already safety-checked) into an OnnxModule."""
    model = onnx.load(str(path))
    return OnnxModule(model).eval()
