"""Memory a session fills while it loads is collapsed into transparent huge pages, and nothing else is.

Why (toolkit/lm/huge_pages.py): decoding reads every prepacked weight once a token, and with 4 KiB pages
that is thousands of TLB entries walked per token. The tests allocate real anonymous memory in the block
and read the kernel's own account of it (/proc/self/smaps: AnonHugePages, Rss).
"""

from __future__ import annotations

import ctypes
import sys
from pathlib import Path

import numpy as np
import pytest

from toolkit.lm.huge_pages import huge_page_size, huge_pages_for_what_loads

MiB = 1 << 20


def mapping_of(array: np.ndarray) -> dict[str, int]:
    """The smaps fields (kB) summed over the mappings that hold `array`'s data (the kernel may split it)."""
    low, high = array.ctypes.data, array.ctypes.data + array.nbytes
    fields: dict[str, int] = {}
    inside = False
    for line in Path("/proc/self/smaps").read_text().splitlines():
        parts = line.split()
        if "-" in parts[0] and len(parts) >= 5:
            start, end = (int(value, 16) for value in parts[0].split("-"))
            inside = start < high and low < end
        elif inside and parts[0].endswith(":") and len(parts) >= 2 and parts[1].isdigit():
            fields[parts[0][:-1]] = fields.get(parts[0][:-1], 0) + int(parts[1])
    return fields


def kernel_collapses() -> bool:
    """Whether this kernel can collapse a resident anonymous range (MADV_COLLAPSE, Linux 6.1+)."""
    if not sys.platform.startswith("linux") or not huge_page_size():
        return False
    libc = ctypes.CDLL(None, use_errno=True)
    libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    probe = np.ones(3 * huge_page_size() // 8)
    start = -(-probe.ctypes.data // huge_page_size()) * huge_page_size()
    return libc.madvise(start, huge_page_size(), 25) == 0


needs_collapse = pytest.mark.skipif(not kernel_collapses(), reason="this kernel cannot collapse into huge pages")


def anonymous_memory(size: int) -> np.ndarray:
    """`size` bytes of fresh private anonymous memory, as an arena's chunk is, between two inaccessible guard
    pages so that the kernel cannot merge its mapping with a neighbour's; nothing in it touched yet."""
    import mmap

    guard = mmap.PAGESIZE
    memory = mmap.mmap(-1, size + 2 * guard, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    whole = np.frombuffer(memory, dtype=np.uint8)
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mprotect.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    for page in (whole.ctypes.data, whole.ctypes.data + guard + size):
        assert libc.mprotect(page, guard, 0) == 0  # PROT_NONE
    return whole[guard:guard + size]


@needs_collapse
def test_memory_filled_while_loading_becomes_huge_pages_with_its_contents_kept():
    with huge_pages_for_what_loads(background=False):
        weights = anonymous_memory(16 * MiB).view(np.float64)
        weights[:] = np.arange(weights.size)  # every page written
    assert mapping_of(weights)["AnonHugePages"] >= 8 * 1024
    assert np.array_equal(weights, np.arange(weights.size, dtype=np.float64))


@needs_collapse
def test_memory_mapped_but_left_untouched_while_loading_is_not_made_resident():
    with huge_pages_for_what_loads(background=False):
        reserved = anonymous_memory(16 * MiB)  # mapped, never written: a thread stack's or an arena's spare room
    fields = mapping_of(reserved)
    assert fields["AnonHugePages"] == 0 and fields["Rss"] < 1024


@needs_collapse
def test_memory_that_existed_before_the_block_is_left_alone():
    earlier = anonymous_memory(16 * MiB)
    earlier[:] = 7
    with huge_pages_for_what_loads(background=False):
        pass
    assert mapping_of(earlier)["AnonHugePages"] == 0


@needs_collapse
def test_the_background_collapse_finishes_while_the_caller_goes_on():
    import time

    with huge_pages_for_what_loads(background=True):
        weights = anonymous_memory(16 * MiB)
        weights[:] = 1
    deadline = time.monotonic() + 30
    while mapping_of(weights)["AnonHugePages"] < 8 * 1024 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert mapping_of(weights)["AnonHugePages"] >= 8 * 1024
    assert np.all(weights == 1)
