"""A run's output root on shared storage: an fsspec URL (s3://bucket/prefix, file://..., memory://).

A path every node sees (a network file system) needs nothing of this: it is a local path.
For a URL, the steps run as always in a local staging folder (one per URL, under the cache
folder, so a rerun here finds the same paths and keys), and each finished step folder is
published to the URL as a unit:

1. the step's old step.json and manifest.json there are deleted first, then the rest of its
   old folder, so a half-replaced folder never carries a record;
2. every other file is uploaded;
3. manifest.json is uploaded, then step.json LAST: step.json (the step's key and summary) is
   the commit marker. A reader that sees manifest.json sees every model file; a run that sees
   step.json with its key sees the whole folder. Its summary's paths (model_path, ...) are
   published with the staging folder written as STAGING_PLACEHOLDER, and fetched with this
   machine's staging folder in its place.

Before a run, each step's remote step.json is read: a step whose remote key matches is
downloaded into staging (unless staging already holds it) and reused; a step whose remote
record is missing or different runs, even when staging holds it (the URL is the truth, so an
interrupted publish is never taken as done). The run's index.html is published the same way,
edgeward-run.json last.

Storage options (e.g. `endpoint_url` for an S3-compatible server) are passed to fsspec; s3fs
also reads the usual AWS variables (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_ENDPOINT_URL).
fsspec and s3fs are the optional extra `storage`, imported only here, inside functions.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from toolkit.errors import BadInput, missing_library

logger = logging.getLogger(__name__)

STEP_RECORD = "step.json"  # the same names as toolkit.pipeline's (this module does not import it)
MANIFEST = "manifest.json"
RUN_MARKER = "edgeward-run.json"
STAGING_PLACEHOLDER = "{edgeward-staging}"  # stands for the staging folder in a published step record
URL = re.compile(r"^(?P<protocol>[A-Za-z][A-Za-z0-9+.-]+)://")


def is_url(out) -> bool:
    """An fsspec URL (protocol://...), as opposed to a local or network-mounted path."""
    return isinstance(out, str) and URL.match(out) is not None


@dataclass
class RemoteRoot:
    """The URL a run publishes to, its filesystem and the local staging folder the steps run in."""

    url: str
    options: dict = field(default_factory=dict)
    staging: Path = Path()
    fs: object = None
    root: str = ""  # the URL's path inside fs

    def describe(self) -> dict:
        """JSON for a step run in another process (open_root(**describe()) reopens it)."""
        return {"url": self.url, "options": self.options, "staging": str(self.staging)}

    def path(self, relative: str | Path) -> str:
        relative = Path(relative).as_posix()
        return self.root if relative in ("", ".") else f"{self.root}/{relative}"

    def read_json(self, relative: str) -> dict | None:
        try:
            return json.loads(self.fs.cat_file(self.path(relative)))
        except FileNotFoundError:
            return None
        except (ValueError, OSError) as error:
            logger.debug("%s: unreadable (%s)", self.path(relative), error)
            return None


def open_root(url: str, options: dict | None = None, staging: str | Path | None = None) -> RemoteRoot:
    """Check the URL's protocol and its library, and pick the staging folder; nothing is written there."""
    match = URL.match(url)
    if match is None:
        raise BadInput(f"{url}: not a URL (give protocol://..., e.g. s3://bucket/prefix)")
    try:
        import fsspec
        from fsspec.core import url_to_fs
    except ImportError:
        raise missing_library("fsspec", "storage") from None
    protocol = match["protocol"]
    if protocol not in fsspec.available_protocols():
        raise BadInput(f"{url}: unknown storage protocol {protocol!r} "
                       f"(use a local path, or a URL such as s3://, file://, memory://)")
    _check_implementation(url, protocol)
    url = url.rstrip("/")
    options = dict(options or {})
    try:
        fs, root = url_to_fs(url, **options)
    except ImportError as error:
        package = getattr(error, "name", None) or protocol
        raise BadInput(f"{url}: {protocol}:// needs {package}: pip install 'edgeward[storage]'") from None
    except (TypeError, ValueError) as error:
        raise BadInput(f"{url}: {error}") from None
    if staging is None:
        from toolkit.paths import cache_dir

        staging = cache_dir() / "remote-runs" / hashlib.sha256(url.encode()).hexdigest()[:16]
    return RemoteRoot(url, options, Path(staging), fs, root.rstrip("/"))


def _check_implementation(url: str, protocol: str) -> None:
    """The library behind a protocol (s3fs for s3://) is importable, else the install hint."""
    import importlib

    from fsspec.registry import known_implementations

    known = known_implementations.get(protocol) or {}
    module = known.get("class", "").rpartition(".")[0]
    if not module:
        return
    try:
        importlib.import_module(module)
    except ImportError:
        package = module.split(".")[0]
        raise BadInput(f"{url}: {protocol}:// needs {package}: pip install 'edgeward[storage]' "
                       f"(or pip install {package})") from None


def check_root(remote: RemoteRoot, force: bool) -> None:
    """Write only into an empty prefix or one an earlier run published (it holds RUN_MARKER);
    storage that cannot be read (no credentials, no such bucket, no server) is refused here."""
    try:
        if force or remote.read_json(RUN_MARKER) is not None:
            return
        found = remote.fs.find(remote.root, maxdepth=None)
    except FileNotFoundError:
        return
    except Exception as error:  # each backend raises its own (botocore's NoCredentialsError, ...)
        raise BadInput(f"{remote.url}: cannot read it ({type(error).__name__}: {error})") from None
    if found:
        raise BadInput(f"{remote.url} holds files that no pipeline run wrote: choose another -o, or pass --force")


def remote_keys(remote: RemoteRoot, steps: list) -> dict[str, str | None]:
    """Each step's key as committed at the URL (None: no committed record)."""
    keys = {}
    for step in steps:
        record = remote.read_json(f"{_relative(remote, step.folder)}/{STEP_RECORD}")
        keys[step.name] = record.get("key") if isinstance(record, dict) else None
    return keys


def sync_before_run(remote: RemoteRoot, steps: list, force: bool) -> None:
    """Make staging agree with the URL: fetch every step committed there with its key, and drop
    the local record of every other step, so that only what the URL holds counts as done."""
    keys = {} if force else remote_keys(remote, steps)
    for step in steps:
        local = _local_key(step.folder)
        if keys.get(step.name) == step.key:
            if local != step.key:
                _download(remote, step.folder)
                logger.info("%s: fetched from %s", step.name, remote.url)
        elif local is not None:
            (step.folder / STEP_RECORD).unlink()  # done here, but not published: run it again


def publish_folder(remote: RemoteRoot, folder: Path) -> None:
    """Publish a finished step folder as a unit (see the module docstring for the order)."""
    target = remote.path(_relative(remote, folder))
    fs = remote.fs
    for marker in (STEP_RECORD, MANIFEST):
        _remove(fs, f"{target}/{marker}")
    if fs.exists(target):
        fs.rm(target, recursive=True)
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    last = [folder / MANIFEST, folder / STEP_RECORD]
    for path in [p for p in files if p not in last] + [p for p in last if p in files]:
        destination = f"{target}/{path.relative_to(folder).as_posix()}"
        fs.makedirs(destination.rsplit("/", 1)[0], exist_ok=True)
        if path.name == STEP_RECORD and path.parent == folder:
            fs.pipe_file(destination, path.read_text().replace(str(remote.staging), STAGING_PLACEHOLDER).encode())
        else:
            fs.put_file(str(path), destination)
    fs.invalidate_cache(target)
    logger.debug("published %s to %s", folder, target)


def publish_run_files(remote: RemoteRoot, names: list[str]) -> None:
    """Publish the run's own files (its index), RUN_MARKER last."""
    fs = remote.fs
    fs.makedirs(remote.root, exist_ok=True)
    ordered = [n for n in names if n != RUN_MARKER] + [n for n in names if n == RUN_MARKER]
    for name in ordered:
        if (remote.staging / name).is_file():
            fs.put_file(str(remote.staging / name), remote.path(name))
    fs.invalidate_cache(remote.root)


def _relative(remote: RemoteRoot, folder: Path) -> str:
    try:
        return Path(folder).relative_to(remote.staging).as_posix()
    except ValueError:
        raise BadInput(f"{folder} is not inside the staging folder of {remote.url}") from None


def _local_key(folder: Path) -> str | None:
    try:
        return json.loads((folder / STEP_RECORD).read_text()).get("key")
    except (OSError, ValueError, AttributeError):
        return None


def _download(remote: RemoteRoot, folder: Path) -> None:
    """Fetch a committed step folder into a temporary folder beside it, then swap it in."""
    source = remote.path(_relative(remote, folder))
    folder.parent.mkdir(parents=True, exist_ok=True)
    fetched = Path(tempfile.mkdtemp(prefix=f".{folder.name}-fetch-", dir=folder.parent))
    try:
        for path in remote.fs.find(source):
            relative = path[len(source):].lstrip("/")
            (fetched / relative).parent.mkdir(parents=True, exist_ok=True)
            remote.fs.get_file(path, str(fetched / relative))
        record = fetched / STEP_RECORD
        if record.is_file():
            record.write_text(record.read_text().replace(STAGING_PLACEHOLDER, str(remote.staging)))
        if folder.exists():
            shutil.rmtree(folder)
        fetched.rename(folder)
    finally:
        shutil.rmtree(fetched, ignore_errors=True)


def _remove(fs, path: str) -> None:
    try:
        fs.rm_file(path)
    except FileNotFoundError:
        pass
