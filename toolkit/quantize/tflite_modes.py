"""TFLite quantization with Google's ai-edge-quantizer (no TensorFlow needed).

Each mode is a recipe built with `RecipeManager`, so per-channel/per-tensor and
excluded layers (by tensor-name regex, for mixed precision) apply to every mode alike.
Static int8 is full integer: weights, activations and the model's inputs and outputs
are int8 (the runtime in `toolkit.runtime` quantizes inputs and dequantizes outputs).
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from toolkit.common.quiet import quiet
from toolkit.errors import BadInput, NothingQuantized, Unsupported
from toolkit.quantize.calibration import calibration_batches
from toolkit.quantize.tflite_rewrite import op_scopes


def _recipe(kind: str, model_path: Path, *, per_channel: bool = True, exclude_nodes=None, bits: int = 8):
    from ai_edge_quantizer import recipe_manager
    from ai_edge_quantizer.algorithm_manager import AlgorithmName
    from ai_edge_quantizer.qtyping import QuantGranularity, TFLOperationName

    manager = recipe_manager.RecipeManager()
    every, ops = ".*", TFLOperationName.ALL_SUPPORTED
    granularity = QuantGranularity.CHANNELWISE if per_channel else QuantGranularity.TENSORWISE
    if kind == "dynamic":
        manager.add_dynamic_config(regex=every, operation_name=ops, num_bits=bits, granularity=granularity)
    elif kind == "weight":
        manager.add_weight_only_config(regex=every, operation_name=ops, num_bits=bits, granularity=granularity)
    elif kind == "static":
        manager.add_static_config(
            regex=every, operation_name=ops, activation_num_bits=8, weight_num_bits=8,
            weight_granularity=granularity,
        )
        # The static recipe leaves embedding tables float (often most of a language model's
        # bytes); store them as int8 too: an int8 table, looked up and dequantized.
        manager.add_weight_only_config(
            regex=every, operation_name=TFLOperationName.EMBEDDING_LOOKUP, num_bits=8, granularity=granularity,
        )
    elif kind == "fp16":
        manager.add_weight_only_config(
            regex=every, operation_name=ops, num_bits=16, algorithm_key=AlgorithmName.FLOAT_CASTING,
        )
    # ai-edge-quantizer matches a regex against each op's scope (its output names joined, each
    # followed by ";"); litert's names prefix one another and hold ";" themselves, so anything
    # looser than the whole scope keeps more layers float than asked, or none.
    for scope in op_scopes(model_path.read_bytes(), exclude_nodes or []):
        manager.add_quantization_config(
            regex=f"^{re.escape(scope)}$", operation_name=ops, algorithm_key=AlgorithmName.NO_QUANTIZE,
        )
    return manager.get_quantization_recipe()


def _run(model_path: Path, out_path: Path, recipe, mode: str, calibration=None) -> dict:
    """Quantize MODEL_PATH into OUT_PATH; notes on what was rewritten first.

    fp16 constants behind DEQUANTIZE ops are folded to float32 first (else the quantizer
    sees no weight); a model without a signature gets a default one where calibration
    needs it. A result whose constants are those of the input changed no weight: that is
    `Unsupported`, never a silent success.
    """
    from ai_edge_quantizer import quantizer

    from toolkit.quantize.tflite_rewrite import constant_types, fold_fp16_constants, with_default_signature

    original = model_path.read_bytes()
    prepared, folds = fold_fp16_constants(original)
    notes: dict = {"fp16_constants_folded": folds} if folds else {}
    calibration_data = None
    if calibration is not None:
        prepared, added = with_default_signature(prepared)
        if added:
            notes["signature_added"] = "serving_default"
        signature, samples = signature_samples(prepared, calibration, model_path.name)
        calibration_data = {signature: samples}
        notes.update(calibration_samples=len(samples), signature=signature)
    with quiet():
        engine = quantizer.Quantizer(bytearray(prepared), recipe)
        calibration_result = engine.calibrate(calibration_data) if engine.need_calibration else None
        result = engine.quantize(calibration_result, enable_progress_report=False)
    quantized = bytes(result.quantized_model)
    if constant_types(quantized) == constant_types(original):
        before = ", ".join(f"{count} {kind}" for kind, count in sorted(constant_types(original).items()))
        raise NothingQuantized(
            f"{mode} changed no weight of {model_path.name} (its constants stay {before or 'none'}): "
            "no op it holds is one this mode quantizes, or its weights are already in that type"
        )
    out_path.write_bytes(quantized)
    return notes


def dynamic_int8(model_path: Path, out_path: Path, *, per_channel: bool = True, exclude_nodes=None, **_) -> dict:
    notes = _run(model_path, out_path, _recipe("dynamic", model_path, per_channel=per_channel, exclude_nodes=exclude_nodes),
                 "dynamic-int8")
    return {"recipe": "dynamic_wi8_afp32", "per_channel": per_channel, **notes}


def weight_int8(model_path: Path, out_path: Path, *, per_channel: bool = True, exclude_nodes=None, **_) -> dict:
    notes = _run(model_path, out_path, _recipe("weight", model_path, per_channel=per_channel, exclude_nodes=exclude_nodes),
                 "weight-int8")
    return {"recipe": "weight_only_wi8_afp32", "per_channel": per_channel, **notes}


def weight_int4(model_path: Path, out_path: Path, *, per_channel: bool = True, exclude_nodes=None, **_) -> dict:
    recipe = _recipe("weight", model_path, per_channel=per_channel, exclude_nodes=exclude_nodes, bits=4)
    notes = _run(model_path, out_path, recipe, "weight-int4")
    return {"recipe": "weight_only_wi4_afp32", "per_channel": per_channel, **notes}


def fp16(model_path: Path, out_path: Path, *, exclude_nodes=None, **_) -> dict:
    notes = _run(model_path, out_path, _recipe("fp16", model_path, exclude_nodes=exclude_nodes), "fp16")
    return {"recipe": "float_casting fp16 weights", **notes}


def static_int8(model_path: Path, out_path: Path, *, calibration, per_channel: bool = True,
                exclude_nodes=None, **_) -> dict:
    recipe = _recipe("static", model_path, per_channel=per_channel, exclude_nodes=exclude_nodes)
    notes = _run(model_path, out_path, recipe, "static-int8", calibration)
    return {"recipe": "static_wi8_ai8", "per_channel": per_channel, "calibration_method": "minmax", **notes}


def signature_samples(model_bytes: bytes, dataset, model_name: str = "model") -> tuple[str, list[dict]]:
    """Calibration feeds keyed by the model's first signature and its argument names.

    The runtime names a litert-torch input `args_0` (from `serving_default_args_0:0`), the
    same as the signature argument; a lone input is matched whatever its name.
    """
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_content=model_bytes)
    signatures = interpreter.get_signature_list()
    if not signatures:  # with_default_signature gives every model one; this is a subgraph-less file
        raise Unsupported(f"{model_name} has no signature and none could be made: ai-edge-quantizer cannot calibrate it")
    key = next(iter(signatures))
    arguments = list(signatures[key]["inputs"])
    runner = interpreter.get_signature_runner(key)
    details = runner.get_input_details()
    shapes = [list(detail["shape"]) for detail in details.values()]
    batch = int(shapes[0][0]) if shapes and shapes[0] and shapes[0][0] > 0 else 1
    samples = []
    for feed in calibration_batches(dataset, batch):
        if any(np.ndim(a) and len(a) != batch for a in feed.values()):
            continue  # a short last batch cannot fill a fixed-shape input
        sample = {}
        for argument in arguments:
            array = feed.get(argument)
            if array is None and len(feed) == 1 and len(arguments) == 1:
                array = next(iter(feed.values()))
            if array is None:
                raise BadInput(f"the calibration data has no input for the signature argument {argument!r}")
            sample[argument] = np.asarray(array, dtype=details[argument]["dtype"])
        samples.append(sample)
    return key, samples
