"""Artifact folders, manifests and atomic writes.

Every stage writes an artifact folder: the model file(s) and a `manifest.json` that
records what was done. Files are written beside their target and renamed into place;
a whole folder is built in a staging folder and swapped in with one atomic
`renameat2(RENAME_EXCHANGE)` where Linux offers it, so a crash or SIGKILL at any moment
leaves either the old or the complete new folder.
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import json
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from toolkit.errors import BadInput

MANIFEST = "manifest.json"
MODEL_FILES = ("model.onnx", "model.tflite", "model.pt2")


# ---------------------------------------------------------------- atomic files


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; a report should be readable like any file
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, data) -> Path:
    from toolkit.common.jsonable import json_default

    return atomic_write_text(path, json.dumps(data, indent=2, default=json_default) + "\n")


def atomic_copy(source: str | os.PathLike, target: str | os.PathLike) -> Path:
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    try:
        shutil.copyfile(source, tmp)
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return target


# ---------------------------------------------------------------- artifact folders

_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def _exchange(a: Path, b: Path) -> bool:
    """Atomically swap two paths (Linux renameat2). False where unsupported."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    result = renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE)
    return result == 0


def _clean_leftovers(out_dir: Path) -> None:
    """Remove staging folders a killed run left beside out_dir."""
    parent = out_dir.parent
    if not parent.is_dir():
        return
    for leftover in parent.glob(f".{out_dir.name}.stage-*"):
        shutil.rmtree(leftover, ignore_errors=True)


def check_writable(out_dir: str | os.PathLike, force: bool) -> Path:
    """Refuse to touch an existing non-empty folder unless forced. Call before any work."""
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise BadInput(f"{out_dir} exists and is not a folder")
    if out_dir.is_dir() and any(out_dir.iterdir()) and not force:
        raise BadInput(f"{out_dir} already exists: pass --force to replace it, or choose another -o")
    return out_dir


@contextlib.contextmanager
def staged_folder(out_dir: str | os.PathLike, force: bool = False) -> Iterator[Path]:
    """Build a folder in a staging place and swap it into `out_dir` only on success.

    On any error (or Ctrl-C) the staging folder is removed and `out_dir` is untouched.
    """
    out_dir = check_writable(out_dir, force).absolute()
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    _clean_leftovers(out_dir)
    stage = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.stage-", dir=out_dir.parent))
    os.chmod(stage, 0o777 & ~_umask())  # mkdtemp makes 0700; an artifact is an ordinary folder
    try:
        yield stage
        for item in stage.rglob("*"):
            if item.is_file():
                with open(item, "rb") as handle:
                    os.fsync(handle.fileno())
        if out_dir.exists():
            if _exchange(stage, out_dir):
                shutil.rmtree(stage, ignore_errors=True)
            else:
                old = out_dir.with_name(f".{out_dir.name}.stage-old{time.time_ns()}")
                os.rename(out_dir, old)
                os.rename(stage, out_dir)
                shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(stage, out_dir)
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise


# ---------------------------------------------------------------- manifests


def sha256_file(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def sha256_json(data) -> str:
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()


def library_versions(*names: str) -> dict[str, str]:
    from importlib import metadata

    versions = {}
    for name in ("edgeward", "numpy", *names):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


def describe_files(folder: Path) -> dict[str, dict]:
    files = {}
    for item in sorted(folder.rglob("*")):
        if item.is_file() and item.name != MANIFEST:
            files[str(item.relative_to(folder))] = {"bytes": item.stat().st_size, "sha256": sha256_file(item)}
    return files


def new_manifest(stage: str, folder: Path, *, source: dict, options: dict, libraries=(), **extra) -> dict:
    """The common manifest fields; `extra` adds stage-specific ones (metrics, export error)."""
    return {
        "stage": stage,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "source": source,
        "options": options,
        "files": describe_files(folder),
        "libraries": library_versions(*libraries),
        **extra,
    }


def write_manifest(folder: str | os.PathLike, manifest: dict) -> Path:
    return atomic_write_json(Path(folder) / MANIFEST, manifest)


def read_manifest(folder: str | os.PathLike) -> dict:
    path = Path(folder) / MANIFEST
    if not path.is_file():
        return {}
    try:
        manifest = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise BadInput(f"{path} is not valid JSON ({error})") from None
    if not isinstance(manifest, dict):
        raise BadInput(f"{path} is not an Edgeward manifest (a JSON object)")
    return manifest


def update_manifest(folder: str | os.PathLike, **updates) -> dict:
    """Merge top-level keys into an existing manifest, atomically."""
    manifest = read_manifest(folder)
    manifest.update(updates)
    write_manifest(folder, manifest)
    return manifest


def source_record(spec: str) -> dict:
    """What a manifest says about its source: the spec and, for a file, its sha256."""
    path = Path(spec)
    record: dict = {"spec": str(spec)}
    if path.is_file():
        record["sha256"] = sha256_file(path)
    elif path.is_dir() and (path / MANIFEST).is_file():
        record["manifest_sha256"] = sha256_file(path / MANIFEST)
    return record


def resolve_model(path: str | os.PathLike) -> Path:
    """A model file, or the model file inside an artifact folder."""
    path = Path(path)
    if path.is_dir():
        manifest = read_manifest(path)
        named = manifest.get("model_file")
        candidates = [named] if named else list(MODEL_FILES)
        for name in candidates:
            if name and (path / name).is_file():
                return path / name
        raise BadInput(f"{path} holds no model file ({', '.join(MODEL_FILES)})")
    if not path.exists():
        raise BadInput(f"{path}: no such file")
    return path


def artifact_folder_of(model_path: Path) -> Path | None:
    """The artifact folder a model file lives in, if it has a manifest."""
    folder = Path(model_path).parent
    return folder if (folder / MANIFEST).is_file() else None
