"""Quantizing writes nothing outside its work folder, even where onnxruntime's shape inference gives up."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from toolkit.quantize.onnx_modes import pre_process


def test_incomplete_symbolic_shapes_leave_the_working_directory_clean(tmp_path, monkeypatch):
    # An op with no shape function makes onnxruntime's symbolic shape inference save its
    # half-done model as sym_shape_infer_temp.onnx in the current directory, then raise.
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    weight = numpy_helper.from_array(np.ones((4, 4), np.float32), "w")
    nodes = [helper.make_node("MatMul", ["x", "w"], ["h"]),
             helper.make_node("Mystery", ["h"], ["y"], domain="custom.unknown")]
    graph = helper.make_graph(nodes, "g", [x], [y], [weight])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17),
                                                    helper.make_opsetid("custom.unknown", 1)])
    model_path = tmp_path / "model.onnx"
    onnx.save(model, str(model_path))
    user_cwd = tmp_path / "cwd"
    user_cwd.mkdir()
    workdir = tmp_path / "work"
    workdir.mkdir()
    monkeypatch.chdir(user_cwd)

    out = pre_process(model_path, workdir)

    assert out == workdir.resolve() / "preprocessed.onnx" and out.exists()
    assert list(user_cwd.iterdir()) == []
    assert (workdir / "sym_shape_infer_temp.onnx").exists()  # the fallback really ran
