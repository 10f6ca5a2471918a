"""Which formats auto searches: the float model of each (the given file, or exports of the source),
each format's side (its reference runner, data and modes), and the order of the tries."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from toolkit.errors import BadInput, EdgewardError

logger = logging.getLogger(__name__)


# Expected size of each mode's model against float32: the order in which modes are tried.
EXPECTED_RATIO = {
    "int4-weight": 0.16, "weight-int4": 0.16,
    "dynamic-int8-int4emb": 0.2,  # ~0.27 without embedding tables
    "dynamic-int8": 0.27, "static-int8": 0.27, "weight-int8": 0.27,
    "fp16": 0.5,
}


def given_model_file(model) -> Path | None:
    """The .onnx/.tflite file MODEL names (a file or a folder holding one); None for a source spec."""
    from toolkit.artifacts import resolve_model
    from toolkit.quantize import MODEL_SUFFIXES

    path = Path(str(model))
    if path.is_file():
        return resolve_model(path) if path.suffix.lower() in MODEL_SUFFIXES else None
    if path.is_dir():  # an artifact folder, or any folder holding model.onnx/.tflite (Optimum's output)
        try:
            found = resolve_model(path)
        except BadInput:
            return None  # a Hugging Face folder or another source
        return found if found.suffix.lower() in MODEL_SUFFIXES else None
    return None


def float_models(model, model_file: Path | None, formats: list[str] | None, out_dir: Path, data) -> dict:
    """format -> float model: the given file, and exports (under out_dir/float-<format>) where needed.

    A source spec is exported to every format asked (default both); one that cannot become a
    format is skipped when the default was asked, refused (Unsupported) when it was named.
    """
    from toolkit.errors import Unsupported
    from toolkit.export import export
    from toolkit.quantize import model_format

    floats: dict[str, Path] = {}
    if model_file is not None:
        own = model_format(model_file)
        wanted = formats or [own]
        if "onnx" in wanted and own == "tflite":
            raise Unsupported(f"{model_file.name}: a TFLite model cannot be converted to ONNX here; "
                              "use --formats tflite")
        floats[own] = model_file
    else:
        wanted = formats or ["onnx", "tflite"]
    failure = None
    for fmt in wanted:
        if fmt in floats:
            continue
        source = model_file if model_file is not None else model
        try:
            result = export(str(source), fmt, out_dir / f"float-{fmt}", force=True, data=spec_only(data))
        except EdgewardError as error:
            if formats is not None:
                raise
            failure = error
            logger.info("auto: %s cannot become %s (%s)", source, fmt, error)
            continue
        floats[fmt] = Path(result.model_path)
    if not floats:
        raise failure or Unsupported(f"{model}: could not be exported to {' or '.join(wanted)}")
    return {fmt: floats[fmt] for fmt in ("onnx", "tflite") if fmt in floats and fmt in wanted}


def spec_only(data):
    from toolkit.data import Dataset

    return None if isinstance(data, Dataset) else data


def search_plan(sides: dict) -> list:
    """(format, mode) pairs in order of expected size; within a size, ONNX first."""
    pairs = [(fmt, mode) for fmt, side in sides.items() for mode in side.modes]
    return sorted(pairs, key=lambda pair: EXPECTED_RATIO.get(pair[1].name, 1.0))


def last_int8(plan) -> str | None:
    names = [mode.name for mode in plan if EXPECTED_RATIO.get(mode.name) == EXPECTED_RATIO["static-int8"]]
    return names[-1] if names else None


@dataclass
class FormatSide:
    """One format's float model, its runner (the reference), the data fitted to it, and its modes."""

    fmt: str
    model_path: Path
    float_size: int
    reference: object
    dataset: object
    calibration: object
    modes: list
    last_int8: str | None

    @classmethod
    def open(cls, fmt: str, model_path: Path, data, calibration) -> FormatSide:
        from toolkit.data import Dataset, load_data
        from toolkit.quantize import model_bytes
        from toolkit.quantize.modes import modes_for
        from toolkit.runtime import open_model
        from toolkit.validate.sides import prepare_feeds

        runner = open_model(model_path)
        names = [spec.name for spec in runner.inputs]
        dataset = data if isinstance(data, Dataset) else load_data(data, names)
        dataset = dataset.for_model(runner.inputs)  # each input's example axis (state [2, batch, 128]: 1)
        prepare_feeds(dataset, runner, "data")  # data that does not fit the model is refused before any try
        modes = modes_for(fmt)
        if calibration is None and any(mode.needs_calibration for mode in modes):
            calibration = dataset
            logger.info("calibrating the static %s modes on the evaluation data (%s); pass a calibration set "
                        "to keep them apart", fmt, dataset.name)
        plan = sorted(modes, key=lambda mode: EXPECTED_RATIO.get(mode.name, 1.0))
        return cls(fmt, model_path, model_bytes(model_path), runner, dataset, calibration, plan, last_int8(plan))
