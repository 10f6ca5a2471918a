"""Give back the resident pages of a loaded model's weights file that onnxruntime no longer reads.

onnxruntime maps `model.onnx.data` and reads MatMulNBits' int4 blocks and scales from the mapping
while prepacking them into its own int8-compute layout; it unmaps the blocks afterwards but keeps
the scales mapped, so their pages stay resident beside the prepacked copies (4.8 MiB on the 55M
model of benchmarks/bench_lm_memory.py, where they are what puts the decode peak above 1.3x the
weights + KV cache: 1.42x with them, 1.28x without). `madvise(MADV_PAGEOUT)` asks the kernel to
reclaim those pages now. It never loses data: clean file pages are re-read from the file on the
next touch, and private pages a process wrote to go to swap (or stay) rather than being dropped;
a page onnxruntime does read during decode (the int4 embedding table) simply comes back.

The same mappings are then advised `MADV_RANDOM`: the embedding table is read a row per token, and
the kernel's readahead would otherwise bring 128 KiB of the file in around each row it faults
(5.0 MiB of the 55M model's 10 MiB table resident after a 64-token prompt; 2.7 MiB with the advice,
decode speed unchanged). Linux 5.4+ only; elsewhere, or on an older kernel, it does nothing.

While a session loads, `paged_out_while_loading` pages the mappings out every 2 ms: the int4 blocks
onnxruntime has already prepacked otherwise stay resident until the end of loading, beside their
prepacked copies, and that transient was the process's peak (44.4-45.2 MiB over the baseline on the
55M model; paged out as it loads, 35.7-38.0 MiB in five fresh processes, 36.6-41.6 every 5 ms, below
decoding's 39 MiB; the load took 114-143 ms, as before within this machine's noise).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import sys
import threading
from pathlib import Path

logger = logging.getLogger(__name__)

MADV_RANDOM = 1
MADV_PAGEOUT = 21


LOADING_INTERVAL_S = 0.002


def page_out_mappings(folder: Path) -> int:
    """madvise(MADV_PAGEOUT), then MADV_RANDOM, every mapping of a file inside `folder`; returns the
    bytes paged out."""
    advised = advise_mappings(folder, random_access=True)
    logger.debug("paged out %d bytes of %s's mappings", advised, folder)
    return advised


def advise_mappings(folder: Path, random_access: bool) -> int:
    """MADV_PAGEOUT, then MADV_RANDOM if `random_access`, every mapping of a file inside `folder`, without
    a log line (the loading loop calls it every few milliseconds); returns the bytes paged out."""
    if not sys.platform.startswith("linux"):
        return 0
    try:
        maps = Path("/proc/self/maps").read_text()
        libc = c_library()
    except OSError:
        return 0
    prefix = str(Path(folder).resolve()) + "/"
    advised = 0
    for line in maps.splitlines():
        fields = line.split(maxsplit=5)
        if len(fields) == 6 and fields[5].startswith(prefix):
            start, end = (int(value, 16) for value in fields[0].split("-"))
            if libc.madvise(start, end - start, MADV_PAGEOUT) == 0:
                advised += end - start
            if random_access:
                libc.madvise(start, end - start, MADV_RANDOM)
    return advised


@functools.cache
def c_library():
    """The C library with madvise's argument types set, loaded once (the loading loop calls madvise
    every few milliseconds)."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    return libc


@contextlib.contextmanager
def paged_out_while_loading(folder: Path, interval_s: float = LOADING_INTERVAL_S):
    """Page `folder`'s mappings out every `interval_s` while the body runs (onnxruntime creating a session,
    which releases the GIL), then once more with MADV_RANDOM (`page_out_mappings`). Loading is sequential
    (no MADV_RANDOM yet): a page onnxruntime is still reading comes back from the file."""
    if not sys.platform.startswith("linux"):
        yield
        return
    done = threading.Event()

    def keep_paging_out():
        while not done.wait(interval_s):
            advise_mappings(folder, random_access=False)

    pager = threading.Thread(target=keep_paging_out, name="edgeward-page-out", daemon=True)
    pager.start()
    try:
        yield
    finally:
        done.set()
        pager.join()
        page_out_mappings(folder)
