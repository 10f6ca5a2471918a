"""Back the memory onnxruntime fills while loading a model with transparent huge pages.

Decoding reads every prepacked weight once a token, and with 4 KiB pages that is thousands of TLB
entries walked a token. `madvise(MADV_COLLAPSE)` (Linux 6.1+) copies a resident 2 MiB-aligned range
into one huge page in place, its contents unchanged. On the 55M model of benchmarks/bench_lm_genai.py,
22-28 MiB of what a session loads lies in such ranges (the rest in mappings under 2 MiB). In paired
in-process runs (two sessions of the model, the second collapsed, 40 rounds) it decoded 1.04-1.08x as
fast at 1 thread and 0.99-1.03x at 2, where the same A/B without the collapse read 1.00-1.04x and
0.99-1.00x: a gain of a few percent, near this machine's noise.

Only anonymous memory mapped while the session loaded is collapsed, and of it only the 2 MiB blocks at
least 90% resident (mincore): collapsing fills a block's missing pages, and a thread's mostly unused
8 MiB stack or an arena's spare room must not become resident. The copy took 14-300 ms here, so it runs
in a background thread (ctypes releases the GIL in madvise): decoding starts at once and runs faster
from when it is done. Where the kernel cannot (another OS, an older kernel, huge pages disabled),
nothing happens.
"""

from __future__ import annotations

import contextlib
import logging
import mmap
import threading
from pathlib import Path

from toolkit.lm.mapped_pages import c_library

logger = logging.getLogger(__name__)

MADV_HUGEPAGE = 14
MADV_COLLAPSE = 25
MIN_RESIDENT_SHARE = 0.9
THP_SETTINGS = Path("/sys/kernel/mm/transparent_hugepage")


def huge_page_size() -> int:
    """The kernel's huge page size in bytes, or 0 where transparent huge pages are unavailable or disabled."""
    try:
        if "[never]" in (THP_SETTINGS / "enabled").read_text():
            return 0
        return int((THP_SETTINGS / "hpage_pmd_size").read_text())
    except (OSError, ValueError):
        return 0


def anonymous_mappings() -> list[tuple[int, int]]:
    """This process's private anonymous read-write mappings, the heap included: (start, end) pairs."""
    mappings = []
    for line in Path("/proc/self/maps").read_text().splitlines():
        fields = line.split(maxsplit=5)
        name = fields[5].strip() if len(fields) == 6 else ""
        if fields[1] == "rw-p" and name in ("", "[heap]"):
            mappings.append(tuple(int(value, 16) for value in fields[0].split("-")))
    return mappings


def new_ranges(before: list[tuple[int, int]], after: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """The parts of `after`'s mappings that no mapping of `before` covered (a heap that grew gives its new end)."""
    ranges = []
    for start, end in after:
        pieces = [(start, end)]
        for old_start, old_end in before:
            pieces = [part for low, high in pieces
                      for part in ((low, min(high, old_start)), (max(low, old_end), high)) if part[1] > part[0]]
        ranges.extend(pieces)
    return ranges


def resident_huge_ranges(ranges: list[tuple[int, int]], page_size: int) -> list[tuple[int, int]]:
    """The huge-page-aligned blocks inside `ranges` at least MIN_RESIDENT_SHARE resident (mincore), adjacent
    blocks joined: collapsing fills a block's missing pages, and untouched room must stay unbacked."""
    import ctypes

    libc = c_library()
    base_page = mmap.PAGESIZE
    blocks: list[tuple[int, int]] = []
    for start, end in ranges:
        low = -(-start // page_size) * page_size
        high = end // page_size * page_size
        if high <= low:
            continue
        residency = (ctypes.c_ubyte * ((high - low) // base_page))()
        if libc.mincore(ctypes.c_void_p(low), ctypes.c_size_t(high - low), residency) != 0:
            continue
        flags = bytes(residency)
        per_block = page_size // base_page
        for index in range(0, len(flags), per_block):
            absent = sum(1 for flag in flags[index:index + per_block] if not flag & 1)
            if absent <= (1 - MIN_RESIDENT_SHARE) * per_block:
                block_start = low + index * base_page
                if blocks and blocks[-1][1] == block_start:
                    blocks[-1] = (blocks[-1][0], block_start + page_size)
                else:
                    blocks.append((block_start, block_start + page_size))
    return blocks


def collapse(blocks: list[tuple[int, int]]) -> int:
    """MADV_HUGEPAGE then MADV_COLLAPSE each huge-page-aligned block; returns the bytes collapsed."""
    libc = c_library()
    collapsed = 0
    for start, end in blocks:
        libc.madvise(start, end - start, MADV_HUGEPAGE)
        if libc.madvise(start, end - start, MADV_COLLAPSE) == 0:
            collapsed += end - start
    return collapsed


@contextlib.contextmanager
def huge_pages_for_what_loads(background: bool = True):
    """Collapse into huge pages the anonymous memory the body maps and fills (onnxruntime creating a session).

    With `background` the collapse runs in a daemon thread and the body's caller goes on at once;
    otherwise it is done when the block exits."""
    page_size = huge_page_size()  # 0 off Linux: there is no /sys/kernel/mm
    if not page_size:
        yield
        return
    try:
        before = anonymous_mappings()
    except OSError:
        yield
        return
    yield
    try:
        blocks = resident_huge_ranges(new_ranges(before, anonymous_mappings()), page_size)
    except OSError:
        return
    if not blocks:
        return

    def run():
        collapsed = collapse(blocks)
        logger.debug("collapsed %d bytes into huge pages (%d ranges)", collapsed, len(blocks))

    if background:
        threading.Thread(target=run, name="edgeward-huge-pages", daemon=True).start()
    else:
        run()
