"""Checks that run before an untrusted file is parsed by a native or code-running library.

They turn known attack shapes into clean errors (BadInput, exit 2), without executing
or unpickling anything to find out:
- ONNX external data that points out of the model's folder (CVE-2022-25882,
  CVE-2024-27318: `..`, `a/../../x`, absolute paths, symlinks, hard links);
- pickle checkpoints (a pickle runs code when loaded), refused unless the user trusts
  them; TorchScript archives, which are programs; .pt2 archives that need pickle;
- Hugging Face folders whose config asks transformers to run the folder's own .py files;
- safetensors headers that are too large or whose offsets leave the file;
- archives whose members escape the destination, are links or devices, or expand past
  a size limit (CVE-2007-4559);
- YAML with tags that build Python objects (only safe_load is used), or alias bombs;
- files that are not what their suffix says, and truncated flatbuffers.
"""

from __future__ import annotations

import json
import os
import stat
import struct
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

from toolkit.errors import BadInput

TFLITE_MAGIC = b"TFL3"
SAFETENSORS_MAX_HEADER = 100 * 1024 * 1024  # the safetensors format's own cap
YAML_MAX_BYTES = 5 * 1024 * 1024
YAML_MAX_NODES = 1_000_000
JSON_CONFIG_MAX_BYTES = 10 * 1024 * 1024
PICKLE_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt", ".pkl", ".pickle", ".joblib")
TRUST_PICKLE_HINT = "convert it to safetensors, or pass --trust-pickle if you trust whoever made it"


def check_exists(path: Path) -> None:
    path = Path(path)
    if not path.exists():
        raise BadInput(f"{path}: no such file")
    if not path.is_file():
        raise BadInput(f"{path}: not a file")
    if path.stat().st_size == 0:
        raise BadInput(f"{path}: the file is empty")


def check_tflite_file(path: Path) -> None:
    check_exists(path)
    with open(path, "rb") as handle:
        head = handle.read(8)
    if len(head) < 8 or head[4:8] != TFLITE_MAGIC:
        raise BadInput(f"{path}: not a TFLite model (no TFL3 identifier)")
    root_offset = struct.unpack("<I", head[:4])[0]
    if root_offset + 4 > Path(path).stat().st_size:
        raise BadInput(f"{path}: not a valid TFLite model (truncated flatbuffer)")
    check_tflite_graph(path)


# Ops whose second input may legitimately be absent (-1): the LSTM family's CIFG weights.
_TFLITE_OPTIONAL_SECOND = {"LSTM", "UNIDIRECTIONAL_SEQUENCE_LSTM", "BIDIRECTIONAL_SEQUENCE_LSTM"}


def check_tflite_graph(path: Path) -> None:
    """Refuse graph shapes that crash the TFLite interpreter natively rather than failing.

    Found by the fuzz suite (ai-edge-litert 2.3.0): an operator whose first or second
    input is -1 ("absent") segfaults TRANSPOSE, RESHAPE and FULLY_CONNECTED kernels, and
    an output of -1 segfaults too; a dimension near INT_MAX overflows
    in allocate_tensors (tensorflow#111458). Read with the flatbuffer schema that ships
    with ai-edge-litert, lazily: no buffer is copied. Skipped if the schema is missing.
    """
    try:
        from ai_edge_litert import schema_py_generated as schema
    except ImportError:
        return
    import mmap

    names = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
    with open(path, "rb") as handle, mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as data:
        size = len(data)
        try:
            model = schema.Model.GetRootAs(data, 0)
            codes = [max(model.OperatorCodes(i).BuiltinCode(), model.OperatorCodes(i).DeprecatedBuiltinCode())
                     for i in range(_bounded(model.OperatorCodesLength(), size))]
            for g in range(_bounded(model.SubgraphsLength(), size)):
                graph = model.Subgraphs(g)
                tensors = _bounded(graph.TensorsLength(), size)
                for t in range(tensors):
                    shape = [int(d) for d in graph.Tensors(t).ShapeAsNumpy()] if graph.Tensors(t).ShapeLength() else []
                    if any(d < 0 or d > 2**30 for d in shape):
                        raise BadInput(f"{path}: refused: tensor {t} has a dimension out of range ({shape})")
                for o in range(_bounded(graph.OperatorsLength(), size)):
                    op = graph.Operators(o)
                    inputs = [int(i) for i in op.InputsAsNumpy()] if op.InputsLength() else []
                    code = codes[op.OpcodeIndex()] if op.OpcodeIndex() < len(codes) else -1
                    name = names.get(code, str(code))
                    required = 1 if name in _TFLITE_OPTIONAL_SECOND else 2
                    outputs = [int(i) for i in op.OutputsAsNumpy()] if op.OutputsLength() else []
                    if any(i >= tensors or i < -1 for i in inputs) or -1 in inputs[:required]:
                        raise BadInput(f"{path}: refused: operator {o} ({name}) names a missing input tensor")
                    if any(i >= tensors or i < 0 for i in outputs):
                        raise BadInput(f"{path}: refused: operator {o} ({name}) names a missing output tensor")
        except BadInput:
            raise
        except Exception as error:  # the flatbuffer reader raises several types on garbage
            raise BadInput(f"{path}: not a valid TFLite model ({_first_line(error)})") from None


def _bounded(length: int, size: int) -> int:
    if length < 0 or length * 4 > size:
        raise BadInput("not a valid TFLite model (a vector is longer than the file)")
    return length


# ---------------------------------------------------------------- ONNX


def check_onnx_file(path: Path):
    """Parse the protobuf without loading external data, then confine every external location.

    Returns the parsed ModelProto (without external weights) so callers need not parse again.
    """
    check_exists(path)
    import onnx

    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as error:
        raise BadInput(f"{path}: not a readable ONNX model ({_first_line(error)})") from None
    if not model.graph.node and not model.graph.output:
        raise BadInput(f"{path}: not an ONNX model (no graph)")
    check_external_data(model, Path(path).parent)
    return model


def _first_line(error: BaseException) -> str:
    lines = str(error).strip().splitlines()
    return (lines[0] if lines else type(error).__name__)[:200]


def external_locations(model) -> list[str]:
    """Every external-data location in a model: initializers, attributes, sparse tensors."""
    from onnx.external_data_helper import _get_all_tensors

    tensors = list(_get_all_tensors(model))
    for sparse in _sparse_tensors(model):
        tensors.extend((sparse.values, sparse.indices))
    locations = []
    for tensor in tensors:
        for entry in tensor.external_data:
            if entry.key == "location" and (tensor.data_location == 1 or entry.value):
                locations.append(entry.value)
    return locations


def _sparse_tensors(model):
    """Sparse initializers and sparse attributes: ORT's sparse path is a known gap."""
    graphs = [model.graph, *model.functions]
    while graphs:
        graph = graphs.pop()
        yield from getattr(graph, "sparse_initializer", ())
        for node in graph.node:
            for attribute in node.attribute:
                if attribute.HasField("sparse_tensor"):
                    yield attribute.sparse_tensor
                yield from attribute.sparse_tensors
                if attribute.HasField("g"):
                    graphs.append(attribute.g)
                graphs.extend(attribute.graphs)


def check_external_data(model, folder: Path) -> None:
    """Refuse external data outside `folder`: absolute paths, `..`, symlinks out, hard links.

    Only names and file metadata are looked at (lstat), never the data itself, so a
    refused location is refused before any read.
    """
    folder = Path(os.path.abspath(folder))
    root = folder.resolve()
    for location in external_locations(model):
        _check_location_text(location)
        try:
            _check_location_file(folder, root, location)
        except OSError as error:
            raise BadInput(f"refused: external data location {location[:100]!r}: {error.strerror}") from None


def _check_location_file(folder: Path, root: Path, location: str) -> None:
    target = folder / location
    walked = folder
    for part in Path(location).parts:
        walked = walked / part
        if walked.is_symlink():
            raise BadInput(f"refused: external data {location!r} goes through a symbolic link")
    resolved = target.resolve()
    if root not in resolved.parents:
        raise BadInput(f"refused: external data location {location!r} leaves the model's folder")
    try:
        info = os.lstat(resolved)
    except OSError:
        raise BadInput(f"external data file {location!r} is missing beside the model") from None
    if not stat.S_ISREG(info.st_mode):
        raise BadInput(f"refused: external data {location!r} is not a regular file")
    if info.st_nlink > 1:
        raise BadInput(f"refused: external data {location!r} is a hard link")


def _check_location_text(location: str) -> None:
    if not location or "\x00" in location:
        raise BadInput(f"refused: external data location {location!r} is empty or holds a NUL byte")
    if os.path.isabs(location) or location.startswith(("/", "\\")) or ":" in location or "\\" in location:
        raise BadInput(f"refused: external data location {location!r} is not a plain relative path")
    if ".." in Path(location).parts:
        raise BadInput(f"refused: external data location {location!r} leaves the model's folder")


# ---------------------------------------------------------------- pickle, TorchScript, .pt2


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
                config = _bounded_json(archive.read(info), f"{path.name}:{name}")
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


def _bounded_json(data: bytes, what: str):
    if len(data) > JSON_CONFIG_MAX_BYTES:
        raise BadInput(f"{what}: the JSON is larger than {JSON_CONFIG_MAX_BYTES // 2**20} MB")
    try:
        return json.loads(data)
    except (ValueError, RecursionError) as error:
        raise BadInput(f"{what}: not valid JSON ({_first_line(error)})") from None


# ---------------------------------------------------------------- safetensors


_SAFETENSORS_DTYPES = {
    "BOOL": 1, "U8": 1, "I8": 1, "F8_E5M2": 1, "F8_E4M3": 1, "F8_E8M0": 1, "I16": 2, "U16": 2, "F16": 2,
    "BF16": 2, "I32": 4, "U32": 4, "F32": 4, "I64": 8, "U64": 8, "F64": 8, "C64": 8,
}


def check_safetensors(path: Path, max_header: int = SAFETENSORS_MAX_HEADER) -> dict:
    """Validate a safetensors header before the library maps the file; return the header.

    The header must be at most 100 MB of JSON; every tensor's dtype known, its shape
    non-negative, its byte range inside the file and as long as shape × dtype says; and
    the ranges must tile the data exactly, no overlaps and no holes (the format's rule,
    which rules out polyglot files).
    """
    path = Path(path)
    check_exists(path)
    size = path.stat().st_size
    with open(path, "rb") as handle:
        prefix = handle.read(8)
        if len(prefix) < 8:
            raise BadInput(f"{path}: not a safetensors file (shorter than its 8-byte header size)")
        header_size = struct.unpack("<Q", prefix)[0]
        if header_size > max_header:
            raise BadInput(f"{path}: safetensors header of {header_size} bytes is over the {max_header}-byte limit")
        if 8 + header_size > size:
            raise BadInput(f"{path}: not a valid safetensors file (header runs past the end of the file)")
        raw = handle.read(header_size)
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise BadInput(f"{path}: not a valid safetensors file (the header is not JSON)") from None
    if not isinstance(header, dict):
        raise BadInput(f"{path}: not a valid safetensors file (the header is not a JSON object)")
    _check_safetensors_entries(path, header, size - 8 - header_size)
    return header


def _check_safetensors_entries(path: Path, header: dict, data_bytes: int) -> None:
    ranges = []
    for name, entry in header.items():
        if name == "__metadata__":
            if not isinstance(entry, dict) or not all(isinstance(v, str) for v in entry.values()):
                raise BadInput(f"{path}: safetensors __metadata__ must map strings to strings")
            continue
        if not isinstance(entry, dict):
            raise BadInput(f"{path}: safetensors entry {name[:80]!r} is not an object")
        dtype, shape, offsets = entry.get("dtype"), entry.get("shape"), entry.get("data_offsets")
        if dtype not in _SAFETENSORS_DTYPES:
            raise BadInput(f"{path}: tensor {name[:80]!r} has an unknown dtype {str(dtype)[:20]!r}")
        if not isinstance(shape, list) or not all(type(d) is int and d >= 0 for d in shape):
            raise BadInput(f"{path}: tensor {name[:80]!r} has an invalid shape")
        if (not isinstance(offsets, list) or len(offsets) != 2 or not all(type(o) is int for o in offsets)
                or not 0 <= offsets[0] <= offsets[1] <= data_bytes):
            raise BadInput(f"{path}: tensor {name[:80]!r} has byte offsets outside the file")
        count = 1
        for dim in shape:
            count *= dim
        if count * _SAFETENSORS_DTYPES[dtype] != offsets[1] - offsets[0]:
            raise BadInput(f"{path}: tensor {name[:80]!r} holds {offsets[1] - offsets[0]} bytes, "
                           f"not the {count * _SAFETENSORS_DTYPES[dtype]} its shape and dtype need")
        ranges.append((offsets[0], offsets[1], name))
    ranges.sort()
    for (_, end, first), (start, _, second) in zip(ranges, ranges[1:], strict=False):
        if start < end:
            raise BadInput(f"{path}: tensors {first[:60]!r} and {second[:60]!r} overlap")
        if start > end:
            raise BadInput(f"{path}: a hole of {start - end} bytes before tensor {second[:60]!r} (not allowed)")
    if ranges and ranges[0][0] != 0:
        raise BadInput(f"{path}: the first tensor does not start at the data's first byte")
    if (ranges[-1][1] if ranges else 0) != data_bytes:
        raise BadInput(f"{path}: {data_bytes - (ranges[-1][1] if ranges else 0)} bytes after the last tensor "
                       f"(a safetensors file has no trailing data)")


# ---------------------------------------------------------------- Hugging Face folders


@dataclass
class HfFolder:
    """What a Hugging Face model folder holds, as far as safety goes."""

    path: Path
    config: dict
    code_files: list[str] = field(default_factory=list)  # .py files it ships
    needs_remote_code: bool = False  # its config names classes in those files (auto_map)
    safetensors: list[str] = field(default_factory=list)
    pickle_weights: list[str] = field(default_factory=list)


_HF_CONFIGS = ("config.json", "tokenizer_config.json", "preprocessor_config.json", "processor_config.json",
               "generation_config.json")


def check_hf_folder(path: Path, trust_remote_code: bool = False, trust_pickle: bool = False) -> HfFolder:
    """Check a Hugging Face folder before transformers/optimum touch it.

    Refuses a folder whose config asks for its own code (auto_map) unless
    trust_remote_code, naming the .py files that would run; refuses pickle weights
    (pytorch_model.bin) when no safetensors exist unless trust_pickle; checks every
    safetensors header. Load with use_safetensors=True so nothing falls back to pickle.
    """
    path = Path(path)
    config_path = path / "config.json"
    if not config_path.is_file():
        raise BadInput(f"{path}: not a Hugging Face model folder (no config.json)")
    configs = {}
    for name in _HF_CONFIGS:
        if (path / name).is_file():
            configs[name] = _bounded_json(_read_limited(path / name), f"{path / name}")
    config = configs["config.json"]
    if not isinstance(config, dict):
        raise BadInput(f"{config_path}: not a JSON object")
    folder = HfFolder(path=path, config=config)
    folder.code_files = sorted(str(p.relative_to(path)) for p in path.rglob("*.py"))
    folder.needs_remote_code = any(isinstance(c, dict) and ("auto_map" in c or "custom_pipelines" in c)
                                   for c in configs.values())
    if folder.needs_remote_code and not trust_remote_code:
        files = ", ".join(folder.code_files) or "files it would fetch from the Hub"
        raise BadInput(f"refused: {path} wants to run its own code ({files}): read it, then pass "
                       f"--trust-remote-code if you trust it")
    folder.safetensors = sorted(str(p.relative_to(path)) for p in path.rglob("*.safetensors"))
    folder.pickle_weights = sorted(
        str(p.relative_to(path)) for p in path.rglob("*") if p.suffix in (".bin", ".pt", ".pth", ".ckpt", ".pkl")
        and p.is_file())
    if not folder.safetensors and folder.pickle_weights and not trust_pickle:
        raise BadInput(f"refused: {path} has only pickle weights ({', '.join(folder.pickle_weights[:4])}), "
                       f"which can run code when loaded: {TRUST_PICKLE_HINT}")
    for name in folder.safetensors:
        check_safetensors(path / name)
    return folder


def _read_limited(path: Path, limit: int = JSON_CONFIG_MAX_BYTES) -> bytes:
    if path.stat().st_size > limit:
        raise BadInput(f"{path}: larger than {limit // 2**20} MB")
    return path.read_bytes()


# ---------------------------------------------------------------- YAML


def load_yaml(source: Path | str, what: str | None = None):
    """yaml.safe_load with a size limit and an alias limit; errors are one line (BadInput).

    `source` is a path, or YAML text when `what` names it. safe_load builds no Python
    objects (CVE-2017-18342, CVE-2020-1747); the expansion limit stops "billion laughs"
    documents that are small on disk and enormous once walked (json.dumps, deepcopy).
    """
    import yaml

    if what is None:
        path = Path(source)
        check_exists(path)
        text = _read_limited(path, YAML_MAX_BYTES).decode("utf-8", errors="replace")
        what = str(path)
    else:
        text = str(source)
        if len(text) > YAML_MAX_BYTES:
            raise BadInput(f"{what}: larger than {YAML_MAX_BYTES // 2**20} MB")
    try:
        expanded = _expanded_size(text) if "*" in text else 0
        if expanded == RECURSIVE:
            raise BadInput(f"{what}: a YAML alias refers to a collection that contains it (refused)")
        if expanded > YAML_MAX_NODES:
            raise BadInput(f"{what}: expands to more than {YAML_MAX_NODES} YAML nodes through its aliases "
                           f"(refused as a possible alias bomb)")
        return yaml.safe_load(text)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark else ""
        problem = getattr(error, "problem", None) or _first_line(error)
        raise BadInput(f"{what}: not valid YAML{where}: {problem}") from None
    except RecursionError:
        raise BadInput(f"{what}: YAML nested too deeply") from None


RECURSIVE = -1


def _expanded_size(text: str) -> int:
    """How many nodes the document has once every alias is expanded (from parser events)."""
    import yaml

    sizes: dict[str, int] = {}
    stack: list[list] = [[None, 0]]  # [anchor, nodes so far] per open collection
    for event in yaml.parse(text, Loader=yaml.SafeLoader):
        if isinstance(event, yaml.AliasEvent):
            if any(anchor == event.anchor for anchor, _ in stack):
                return RECURSIVE  # the alias points into a collection still open: a cycle
            stack[-1][1] += sizes.get(event.anchor, 1)
        elif isinstance(event, yaml.ScalarEvent):
            stack[-1][1] += 1
            if event.anchor:
                sizes[event.anchor] = 1
        elif isinstance(event, (yaml.SequenceStartEvent, yaml.MappingStartEvent)):
            stack.append([event.anchor, 1])
        elif isinstance(event, (yaml.SequenceEndEvent, yaml.MappingEndEvent)):
            anchor, count = stack.pop()
            if anchor:
                sizes[anchor] = count
            stack[-1][1] += count
        if stack[0][1] > YAML_MAX_NODES or (len(stack) > 1 and stack[-1][1] > YAML_MAX_NODES):
            return YAML_MAX_NODES + 1
    return stack[0][1]


# ---------------------------------------------------------------- archives


def safe_extract(archive: Path, dest: Path, max_bytes: int = 4 * 2**30, max_files: int = 20000) -> Path:
    """Extract a .tar(.gz/.bz2/.xz) or .zip into `dest` (new or empty), refusing anything unsafe.

    Refused: absolute names, `..`, links, devices and FIFOs, more than `max_files`
    members, more than `max_bytes` once expanded (CVE-2007-4559, zip bombs). The
    members land in a staging folder that replaces `dest` only when all succeeded.
    """
    from toolkit.safety.archive import extract

    return extract(archive, dest, max_bytes=max_bytes, max_files=max_files)
