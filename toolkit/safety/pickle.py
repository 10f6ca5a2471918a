"""Checkpoints that would run code when loaded: pickles, TorchScript archives, .pt2 with pickles.

Everything here reads bytes and zip directories only; nothing is unpickled, except a
.pt2's sample inputs through torch's restricted (weights_only) unpickler.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

from toolkit.errors import BadInput
from toolkit.safety.files import check_exists, parse_json_limited

PICKLE_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt", ".pkl", ".pickle", ".joblib")
TRUST_PICKLE_HINT = "convert it to safetensors, or pass --trust-pickle if you trust whoever made it"


def checkpoint_kind(path: Path) -> str:
    """What a checkpoint file is, from its bytes alone (nothing is unpickled).

    One of: "safetensors", "pickle", "torch-zip" (torch.save: a zip holding data.pkl),
    "torchscript" (a zip with code/), "pt2" (torch.export.save), "zip", "onnx-or-unknown".
    """
    path = Path(path)
    check_exists(path)
    with open(path, "rb") as handle:
        head = handle.read(16)
    if head[:2] in (b"\x80\x02", b"\x80\x03", b"\x80\x04", b"\x80\x05"):
        return "pickle"
    if head[:4] == b"PK\x03\x04" or zipfile.is_zipfile(path):
        try:
            with zipfile.ZipFile(path) as archive:
                names = archive.namelist()
        except (zipfile.BadZipFile, OSError, ValueError):
            return "zip"
        if any("/code/" in name or name.startswith("code/") for name in names):
            return "torchscript"
        if any(name.endswith(("models/model.json", "archive_format")) for name in names):
            return "pt2"
        if any(name.endswith(".pkl") for name in names):
            return "torch-zip"
        return "zip"
    if len(head) >= 9 and head[8:9] == b"{":
        return "safetensors"
    return "onnx-or-unknown"


def refuse_pickle(path: Path, *, trust_pickle: bool = False, trust_code: bool = False) -> str:
    """Refuse a checkpoint whose loading would run pickle or TorchScript code; return its kind.

    A .pt/.pth/.bin/.ckpt file that is neither safetensors nor a recognised archive is
    treated as a pickle too (protocol 0 and 1 pickles have no magic bytes).
    """
    path = Path(path)
    kind = checkpoint_kind(path)
    if kind == "torchscript" and not trust_code:
        raise BadInput(f"refused: {path.name} is a TorchScript archive, which is a program: pass "
                       f"--trust-pickle only if you trust whoever made it, or export it as .pt2/safetensors")
    if kind in ("pickle", "torch-zip", "torchscript") and not (trust_pickle or trust_code):
        raise BadInput(f"refused: {path.name} is a pickle checkpoint, which can run code when loaded: "
                       f"{TRUST_PICKLE_HINT}")
    if kind == "pt2" and not trust_pickle:
        _check_pt2(path)
    if kind == "onnx-or-unknown" and path.suffix.lower() in PICKLE_SUFFIXES and not trust_pickle:
        raise BadInput(f"refused: {path.name} is not a recognised checkpoint and may be a pickle: "
                       f"{TRUST_PICKLE_HINT}")
    return kind


def _check_pt2(path: Path) -> None:
    """A .pt2 is safe only when no payload needs full pickle.

    torch.export.load unpickles weights and constants marked `use_pickle` with
    weights_only=False, and falls back to weights_only=False for sample inputs that the
    restricted unpickler refuses. So: refuse `use_pickle` payloads and legacy .pt
    members, and check the other pickled members with the restricted unpickler first.
    """
    import io

    with zipfile.ZipFile(path) as archive:
        for info in archive.infolist():
            name = info.filename
            if name.endswith("_config.json") and "/data/" in name:
                config = parse_json_limited(archive.read(info), f"{path.name}:{name}")
                payloads = (config.get("config") or {}).values() if isinstance(config, dict) else []
                if any(isinstance(p, dict) and p.get("use_pickle") for p in payloads):
                    raise BadInput(f"refused: {path.name} stores pickled tensors ({name}): {TRUST_PICKLE_HINT}")
            elif name.endswith((".pt", ".pkl")):
                if "/sample_inputs/" not in name:
                    raise BadInput(f"refused: {path.name} holds a pickle ({name}): {TRUST_PICKLE_HINT}")
                import torch

                try:
                    torch.load(io.BytesIO(archive.read(info)), weights_only=True)
                except Exception:
                    raise BadInput(f"refused: {path.name}'s sample inputs need full pickle ({name}): "
                                   f"{TRUST_PICKLE_HINT}") from None
