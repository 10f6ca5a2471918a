"""Auto's mixed-precision fallback: when no full int8 try passes, keep the worst layers in float."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING

from toolkit.errors import EdgewardError

if TYPE_CHECKING:
    from toolkit.quantize.auto_state import SearchState
    from toolkit.quantize.auto_tries import Try

logger = logging.getLogger(__name__)

MIXED_STEPS = (1, 2, 4, 8, 16)  # worst nodes kept in float, per mixed-precision retry


def mixed_precision(state: SearchState, fmt: str, started: float, budget_s: float) -> Try | None:
    """Keep the worst layers of FMT's static int8 try in float, more each time; the first that passes."""
    from toolkit.validate.per_layer import per_layer_error

    side = state.sides[fmt]
    base = next((t for t in state.tries if t.format == fmt and t.mode == "static-int8" and not t.error
                 and not t.excluded), None)
    if base is None or time.perf_counter() - started >= budget_s:
        return None
    try:
        result = per_layer_error(state.out_dir / base.folder, side.model_path, side.dataset, top=max(MIXED_STEPS))
    except EdgewardError as error:
        logger.info("per-layer error of %s failed (%s): no mixed precision", base.folder, error)
        return None
    ranked = [layer.nodes for layer in result.worst]
    weighted: set[str] = set()  # TFLite: the layers holding weights; excluding all of them quantizes nothing
    if fmt == "tflite":  # ai-edge-quantizer recipes select layers by their output tensor names
        from toolkit.quantize.tflite_rewrite import weighted_op_outputs

        outputs = tflite_node_outputs(side.model_path)
        ranked = [[tensor for node in chain for tensor in outputs.get(node, [])] for chain in ranked]
        weighted = weighted_op_outputs(side.model_path.read_bytes())
    logger.info("per-layer (%s): worst nodes %s", fmt,
                ", ".join(f"{layer.node} ({layer.local_sqnr_db} dB)" for layer in result.worst[:5]))
    tried_counts = set()
    for count in MIXED_STEPS:
        count = min(count, len(ranked))
        if count == 0 or count in tried_counts:
            break
        tried_counts.add(count)
        if time.perf_counter() - started >= budget_s:
            return None
        excluded = list(dict.fromkeys(name for chain in ranked[:count] for name in chain))
        if weighted and weighted <= set(excluded):
            break  # every weight kept float: not smaller than the float model
        attempt = state.run_try(fmt, "static-int8", excluded, True)
        if attempt.passed and attempt.smaller:
            return attempt
    return None


def tflite_node_outputs(model_path: Path) -> dict[str, list[str]]:
    """`OP#index` (the per-layer pass's node names) -> the op's output tensor names."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(model_path))
    names = {d["index"]: d["name"] for d in interpreter.get_tensor_details()}
    return {f"{op['op_name']}#{op['index']}": [names[i] for i in op["outputs"] if i in names]
            for op in interpreter._get_ops_details()}  # the public API has no op list
