"""Step keys: a hash of everything a step reads, so a changed input redoes exactly its steps.

A step's key covers its stage, its options, the keys of the steps it reads and the content
of every input from outside the run: the source model (a file, a Hugging Face folder or an
artifact folder), data files and the folders their options name (`preprocessor=`), the
device profiles of bench and estimate steps (the resolved file and the profiles it extends)
and the break-even scenario with the profile and catalogue entries it names. `builtin:` specs are their text plus the package version.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from toolkit import __version__
from toolkit.artifacts import MANIFEST, read_manifest, sha256_file, sha256_json

# the options of each stage that name an input read from outside the run
READS = {
    "distill": ("teacher", "student", "data", "val"),
    "export": ("source",),
    "quantize": ("calibration", "data"),
    "validate": ("reference", "data"),
}
# manifest fields that say what an artifact is; the rest (created, validation, ...) changes
# when a later stage records on it, without changing the model
MANIFEST_IDENTITY = ("stage", "source", "options", "model_file")

_file_hashes: dict[tuple[str, int, int], str] = {}  # (path, size, mtime_ns) -> sha256, per process


def step_key(stage: str, options: dict, upstream: list[str], reads: dict) -> str:
    return sha256_json({"v": __version__, "stage": stage, "options": options, "upstream": upstream,
                        "reads": reads})


def step_reads(stage: str, options: dict, *, from_upstream: bool) -> dict:
    """The content hash of every outside input a step of `stage` with `options` reads.

    `from_upstream`: the step reads its model from an earlier step (whose key covers it),
    so its model option is not hashed (that folder is this run's own output).
    """
    reads = {}
    for name in READS.get(stage, ()):
        if from_upstream and name == "source":
            continue
        spec = options.get(name)
        if isinstance(spec, str) and spec:
            reads[name] = spec_hash(spec)
    if stage in ("bench", "estimate"):
        reads["profile"] = profile_hash(options["device"])
    if stage == "breakeven":
        reads.update(scenario_reads(options.get("scenario") or {}))
    return reads


def spec_hash(spec: str) -> dict:
    """What a model or data spec stands for: builtin text + version, a file's or a folder's content."""
    if spec.startswith("builtin:"):
        return {"spec": spec, "edgeward": __version__}
    from toolkit.data import spec_path  # a data spec's file or folder, without `images:` or `?options`

    record = {"spec": spec, **option_reads(spec)}
    path = Path(spec_path(spec))
    if path.is_file():
        return {**record, "sha256": cached_sha256(path)}
    if path.is_dir():
        return {**record, "tree": folder_hash(path)}
    return record  # a factory (package.module:fn) or a student rule (shrink:0.5)


def option_reads(spec: str) -> dict:
    """The content of the files and folders a data spec's options name (`preprocessor=DIR`):
    a changed tokenizer or preprocessor_config.json changes the tensors the step reads."""
    from toolkit.data import PATH_OPTIONS, spec_options

    reads = {}
    for name, value in spec_options(spec).items():
        path = Path(value)
        if name not in PATH_OPTIONS or not value:
            continue
        if path.is_file():
            reads[name] = cached_sha256(path)
        elif path.is_dir():
            reads[name] = folder_hash(path)
        else:
            reads[name] = None
    return {"option_reads": reads} if reads else {}


def folder_hash(folder: Path) -> str:
    """Every file's relative path and content, in a fixed order; an artifact's manifest by its identity."""
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        relative = path.relative_to(folder).as_posix()
        if relative == MANIFEST:
            manifest = read_manifest(folder)
            content = sha256_json({key: manifest.get(key) for key in MANIFEST_IDENTITY})
        else:
            content = cached_sha256(path)
        digest.update(f"{relative}\0{content}\n".encode())
    return digest.hexdigest()


def cached_sha256(path: Path) -> str:
    """sha256 of a file, remembered while its size and mtime stay the same (plans are made often)."""
    stat = path.stat()
    marker = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    if marker not in _file_hashes:
        _file_hashes[marker] = sha256_file(path)
    return _file_hashes[marker]


def profile_hash(name: str) -> dict:
    """The device profile `name` as it resolves now ($EDGEWARD_PROFILES, the user's folder, the
    catalogue): its file's content and that of every profile it extends."""
    from toolkit.devices.profiles import profile_files
    from toolkit.safety.yaml import load_yaml

    files = profile_files()
    chain, seen = [], set()
    while name in files and name not in seen:
        seen.add(name)
        path = files[name]
        chain.append({"name": name, "file": os.fspath(path), "sha256": cached_sha256(path)})
        data = load_yaml(path)
        name = data.get("extends") if isinstance(data, dict) else None
    return {"chain": chain} if chain else {"missing": name}


def scenario_reads(scenario: dict) -> dict:
    """The files a scenario reads besides itself: edge.device's profile, the cloud catalogue."""
    from toolkit.costs.pricing import catalogue_dir

    reads = {}
    edge = scenario.get("edge") if isinstance(scenario.get("edge"), dict) else {}
    if isinstance(edge.get("device"), str):
        reads["edge_device"] = profile_hash(edge["device"])
    cloud = scenario.get("cloud") if isinstance(scenario.get("cloud"), dict) else {}
    if any(isinstance(cloud.get(key), str) for key in ("api", "instance")):
        folder = catalogue_dir()  # entries are looked up by name across the whole catalogue
        reads["cloud_catalogue"] = folder_hash(folder) if folder.is_dir() else None
    return reads
