"""An image folder → pixel tensors: class sub-folders give labels, a flat folder has none.

Preprocessing follows a Hugging Face `preprocessor_config.json` when `preprocessor=DIR` is
given (resize, center crop, rescale, normalize, as transformers' image processors do),
else the spec's options (size, crop, resample, scale, mean, std, channels, layout, dtype).
Pillow decodes and resizes; numpy does the rest, so transformers is not needed.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from toolkit.data.dataset import Dataset
from toolkit.data.problems import labels_from_names, report_bad
from toolkit.data.spec import IMAGE_SUFFIXES, DataSpec
from toolkit.errors import BadInput, Unsupported, missing_library

logger = logging.getLogger(__name__)

RESAMPLE = {"nearest": 0, "lanczos": 1, "bilinear": 2, "bicubic": 3, "box": 4, "hamming": 5}
DTYPES = ("float32", "float16", "uint8", "int8")


@dataclass(frozen=True)
class ImagePreprocessing:
    size: int | tuple[int, int] | None = None  # int: the shortest edge; (h, w): exact
    crop: tuple[int, int] | None = None
    crop_pct: float | None = None  # ConvNeXt: resize to size/crop_pct, then crop to size
    resample: int = 2
    scale: float | None = 1 / 255
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    channels: int = 3
    layout: str = "nchw"
    dtype: str = "float32"


def preprocessing_from_config(folder: str | Path) -> ImagePreprocessing:
    """Read a transformers image processor's `preprocessor_config.json`."""
    path = Path(folder) / "preprocessor_config.json"
    if not path.is_file():
        raise BadInput(f"{folder}: no preprocessor_config.json (give size=, mean=, std= options instead)")
    try:
        config = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise BadInput(f"{path} is not readable JSON ({error})") from None
    if not isinstance(config, dict):
        raise BadInput(f"{path}: not an image processor configuration (a JSON object)")
    size = config.get("size") if config.get("do_resize", True) else None
    crop_pct = None
    if isinstance(size, dict):
        if "height" in size and "width" in size:
            size = (int(size["height"]), int(size["width"]))
        elif "shortest_edge" in size:
            size = int(size["shortest_edge"])
            crop_pct = config.get("crop_pct") if size < 384 else None
        else:
            raise Unsupported(f"{path}: size {size} is not one Edgeward reads (height/width or shortest_edge): "
                              "give size= (and crop=) instead")
    elif isinstance(size, int):
        size = (size, size)
    crop = config.get("crop_size") if config.get("do_center_crop") else None
    if isinstance(crop, dict):
        crop = (int(crop["height"]), int(crop["width"]))
    elif isinstance(crop, int):
        crop = (crop, crop)
    if crop_pct and crop is None:
        crop = (size, size)
    normalize = config.get("do_normalize", True)
    return ImagePreprocessing(
        size=size, crop=crop, crop_pct=crop_pct, resample=int(config.get("resample", 2)),
        scale=float(config.get("rescale_factor", 1 / 255)) if config.get("do_rescale", True) else None,
        mean=tuple(config["image_mean"]) if normalize and config.get("image_mean") else None,
        std=tuple(config["image_std"]) if normalize and config.get("image_std") else None,
    )


def preprocessing_from_spec(spec: DataSpec) -> ImagePreprocessing:
    if spec.get("preprocessor"):
        base = preprocessing_from_config(spec.get("preprocessor"))
    else:
        base = ImagePreprocessing()
    changes = {}
    if spec.get("size"):
        size = spec.pair("size")
        changes["size"] = size if isinstance(size, tuple) else (size if spec.get("crop") else (size, size))
    if spec.get("crop"):
        crop = spec.pair("crop")
        changes["crop"] = crop if isinstance(crop, tuple) else (crop, crop)
    if spec.get("resample"):
        if spec.get("resample") not in RESAMPLE:
            raise BadInput(f"data option resample={spec.get('resample')!r}: use one of {', '.join(RESAMPLE)}")
        changes["resample"] = RESAMPLE[spec.get("resample")]
    for name in ("mean", "std"):
        if spec.get(name):
            changes[name] = tuple(spec.floats(name))
    if spec.get("scale"):
        changes["scale"] = spec.floats("scale")[0]
    if spec.get("channels"):
        if spec.get("channels") not in ("1", "3"):
            raise BadInput("data option channels: give 1 (grayscale) or 3 (RGB)")
        changes["channels"] = int(spec.get("channels"))
    if spec.get("layout"):
        if spec.get("layout").lower() not in ("nchw", "nhwc"):
            raise BadInput(f"data option layout={spec.get('layout')!r}: give nchw or nhwc")
        changes["layout"] = spec.get("layout").lower()
    if spec.get("dtype"):
        if spec.get("dtype") not in DTYPES:
            raise BadInput(f"data option dtype={spec.get('dtype')!r}: give one of {', '.join(DTYPES)}")
        changes["dtype"] = spec.get("dtype")
    from dataclasses import replace

    return replace(base, **changes)


def preprocess(image, steps: ImagePreprocessing) -> np.ndarray:
    """One decoded Pillow image → an [H, W, C] array after resize, crop, rescale and normalize."""
    image = image.convert("L" if steps.channels == 1 else "RGB")
    if steps.size is not None:
        image = image.resize(_resize_target(image.size, steps), resample=steps.resample)
    if steps.crop is not None:
        image = _center_crop(image, steps.crop)
    pixels = np.asarray(image)
    if pixels.ndim == 2:
        pixels = pixels[:, :, None]
    if steps.dtype in ("uint8", "int8") and steps.mean is None and steps.scale is None:
        return pixels.astype(np.uint8) if steps.dtype == "uint8" else (pixels.astype(np.int16) - 128).astype(np.int8)
    values = pixels.astype(np.float32)
    if steps.scale is not None:
        values = values * np.float32(steps.scale)
    if steps.mean is not None:
        values = (values - np.asarray(steps.mean, np.float32)[: values.shape[2]]) / np.asarray(
            steps.std or (1.0,) * len(steps.mean), np.float32)[: values.shape[2]]
    return values


def _resize_target(size_wh: tuple[int, int], steps: ImagePreprocessing) -> tuple[int, int]:
    if isinstance(steps.size, tuple):
        return steps.size[1], steps.size[0]
    shortest = steps.size / steps.crop_pct if steps.crop_pct else steps.size
    width, height = size_wh
    short, long = (width, height) if width <= height else (height, width)
    new_short, new_long = int(shortest), int(shortest * long / short)
    return (new_short, new_long) if width <= height else (new_long, new_short)


def _center_crop(image, crop: tuple[int, int]):
    height, width = crop
    top = max((image.height - height) // 2, 0)
    left = max((image.width - width) // 2, 0)
    return image.crop((left, top, left + width, top + height))


def image_files(folder: Path) -> list[tuple[Path, str | None]]:
    """(file, class name) for every image; the class is the sub-folder, None in a flat folder."""
    files = sorted(file for file in folder.rglob("*") if file.is_file() and file.suffix.lower() in IMAGE_SUFFIXES)
    return [(file, file.parent.name if file.parent != folder else None) for file in files]


def load_images(spec: DataSpec) -> Dataset:
    try:
        from PIL import Image
    except ImportError:
        raise missing_library("Pillow") from None
    folder = Path(spec.path)
    if not folder.is_dir():
        raise BadInput(f"{folder}: not an image folder")
    steps = preprocessing_from_spec(spec)
    entries = image_files(folder)[: spec.int("limit")]
    arrays, classes, bad = [], [], []
    for file, class_name in entries:
        try:
            with Image.open(file) as image:
                arrays.append(preprocess(image, steps))
            classes.append(class_name)
        except (OSError, ValueError, Image.DecompressionBombError) as error:
            bad.append((str(file.relative_to(folder)), type(error).__name__))
    report_bad(str(folder), bad, len(arrays))
    shapes = {array.shape for array in arrays}
    if len(shapes) > 1:
        raise BadInput(f"{folder}: images come out in {len(shapes)} sizes {sorted(shapes)[:3]}: give size= (and crop=)")
    batch = np.stack(arrays)
    if steps.layout == "nchw":
        batch = batch.transpose(0, 3, 1, 2)
    batch = np.ascontiguousarray(batch.astype(steps.dtype) if batch.dtype.kind == "f" else batch)
    labels, names = labels_from_names(classes)
    meta = {"kind": "images", "layout": steps.layout.upper(), "classes": names,
            "skipped": [name for name, _ in bad]}
    logger.info("data %s: %d images → %s %s", folder, len(batch), list(batch.shape), steps.layout.upper())
    return Dataset({spec.get("input", "pixel_values"): batch}, labels, name=str(folder), meta=meta)
