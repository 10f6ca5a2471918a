"""Archive extraction that cannot write outside its destination (used via toolkit.safety).

tar's `..` members and links (CVE-2007-4559) and zip bombs are refused before anything
is written; `filter="data"` (PEP 706) is the second line of defence for tar.
"""

from __future__ import annotations

import os
import shutil
import stat
import tarfile
import tempfile
import zipfile
from pathlib import Path

from toolkit.errors import BadInput
from toolkit.safety import _first_line, check_exists


def extract(archive: Path, dest: Path, *, max_bytes: int, max_files: int) -> Path:
    """Extract a .tar(.gz/.bz2/.xz) or .zip into `dest` (new or empty), refusing anything unsafe.

    Refused: absolute names, `..`, links, devices and FIFOs, more than `max_files`
    members, more than `max_bytes` once expanded. Members are written into a staging
    folder beside `dest`, which replaces `dest` only when everything succeeded.
    """
    archive, dest = Path(archive), Path(os.path.abspath(dest))
    check_exists(archive)
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise BadInput(f"{dest} already exists and is not empty")
    dest.parent.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=f".{dest.name}.extract-", dir=dest.parent))
    try:
        if zipfile.is_zipfile(archive):
            _extract_zip(archive, stage, max_bytes, max_files)
        elif tarfile.is_tarfile(archive):
            _extract_tar(archive, stage, max_bytes, max_files)
        else:
            raise BadInput(f"{archive}: not a tar or zip archive")
        if dest.exists():
            dest.rmdir()
        os.rename(stage, dest)
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    return dest


def _check_member_name(archive: Path, name: str) -> None:
    if not name or "\x00" in name or name.startswith(("/", "\\")) or os.path.isabs(name) or ":" in name:
        raise BadInput(f"refused: {archive.name} member {name[:100]!r} has an absolute or odd path")
    if ".." in Path(name.replace("\\", "/")).parts:
        raise BadInput(f"refused: {archive.name} member {name[:100]!r} leaves the destination")


def _extract_tar(archive: Path, stage: Path, max_bytes: int, max_files: int) -> None:

    total = 0
    try:
        with tarfile.open(archive, "r:*") as tar:
            members = []
            for member in tar:
                if len(members) >= max_files:
                    raise BadInput(f"refused: {archive.name} has more than {max_files} members")
                _check_member_name(archive, member.name)
                if not (member.isfile() or member.isdir()):
                    raise BadInput(f"refused: {archive.name} member {member.name[:100]!r} is a link or a device")
                total += member.size
                if total > max_bytes:
                    raise BadInput(f"refused: {archive.name} expands past {max_bytes} bytes")
                members.append(member)
            tar.extractall(stage, members=members, filter="data")
    except (tarfile.TarError, EOFError, OSError, ValueError) as error:
        raise BadInput(f"{archive}: not a readable tar archive ({_first_line(error)})") from None


def _extract_zip(archive: Path, stage: Path, max_bytes: int, max_files: int) -> None:
    total = 0
    try:
        with zipfile.ZipFile(archive) as bundle:
            infos = bundle.infolist()
            if len(infos) > max_files:
                raise BadInput(f"refused: {archive.name} has more than {max_files} members")
            for info in infos:
                _check_member_name(archive, info.filename)
                kind = stat.S_IFMT(info.external_attr >> 16)
                if kind and kind not in (stat.S_IFREG, stat.S_IFDIR):
                    raise BadInput(f"refused: {archive.name} member {info.filename[:100]!r} is a link or a device")
            for info in infos:
                target = stage / info.filename
                if info.is_dir():
                    target.mkdir(parents=True, exist_ok=True)
                    continue
                target.parent.mkdir(parents=True, exist_ok=True)
                with bundle.open(info) as source, open(target, "xb") as sink:
                    while block := source.read(1 << 20):
                        total += len(block)
                        if total > max_bytes:
                            raise BadInput(f"refused: {archive.name} expands past {max_bytes} bytes")
                        sink.write(block)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, OSError, ValueError, NotImplementedError) as error:
        raise BadInput(f"{archive}: not a readable zip archive ({_first_line(error)})") from None
