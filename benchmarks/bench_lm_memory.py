"""Peak resident memory during decode against the issue's target: at most 1.3 × (int4 weights + KV cache).

The int4 model is bench_lm_decode.py's (Qwen2-style, hidden 512, 8 layers, vocab 32000, random
weights, `int4-weight` block 32), as `edgeward quantize` writes a language model: its initializers in
model.onnx.data and an optional `logits_to_keep` input (toolkit/lm/onnx_last_logits.py); for
comparison the same graph saved inline (one model.onnx, what quantize wrote before). Each
measurement runs in a fresh process:

1. baseline: numpy, onnxruntime and the device runner imported, a trivial session (one Add) created and
   run and the benchmark's random prompt drawn (numpy.random and the OpenSSL it initialises, 4.8 MiB,
   are the generator's, not the model's), so the interpreter, the runtime's code and its thread pool
   are counted; the imports' garbage collected and trimmed and the peak restarted (`settled_baseline`);
   VmHWM read;
2. the decoder session opened with the session options under test (and, as open_session does, the
   model file's mappings paged out while it loads and after, and what it loaded collapsed into huge
   pages: toolkit/lm/huge_pages.py); VmHWM read (loading's peak) and restarted;
   a 64-token prompt and 64 greedy tokens decoded (1 warm-up + timed runs) through the device runner's
   own decode loop (toolkit/devices/runner.py `LmDecoder`), either as it is (every prompt position's
   logits) or fed `logits_to_keep` = [1] (the last position's); VmHWM read again (decoding's peak),
   and the resident memory split by where it lies (anonymous, pages of the model's files, pages of
   onnxruntime's library).

The model's share is peak − baseline, the peak the higher of loading's and decoding's; the budget is the initializers' bytes (int4 blocks, scales,
the float tensors left) plus the KV cache of the context used (prompt + new tokens). Session options
tried: the defaults, onnxruntime's CPU arena off (`enable_cpu_mem_arena`), memory patterns off
(`enable_mem_pattern`), initializers outside the arena (`session.use_device_allocator_for_initializers`) and,
and the model file's mappings not paged out nor the loaded memory collapsed (every other row pages them
out while loading and after and collapses, as toolkit.lm.decoder.open_session does:
toolkit/lm/mapped_pages.py, madvise MADV_PAGEOUT then MADV_RANDOM; toolkit/lm/huge_pages.py);
decode tokens/s is measured in the same runs.

Two more variants of the same weights: 'prepacked', a copy onnxruntime saved with
`session.save_external_prepacked_constant_initializers` (its optimized graph, whose data file holds
MatMulNBits' prepacked blobs, which a later session maps instead of prepacking again), and 'fp32
compute', the graph with MatMulNBits' accuracy_level 1 (float compute; `edgeward quantize` writes 4,
int8 compute). The resident pages of the model's files are split by the tensors they hold.

Run: .venv/bin/python benchmarks/bench_lm_memory.py [FOLDER-OF-AN-EARLIER-RUN]
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.common import write_results  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
PROMPT_TOKENS = 64
NEW_TOKENS = 64
RUNS = 3
TARGET = 1.3
OPTIONS = {"default": {}, "arena off": {"arena": False}, "mem pattern off": {"mem_pattern": False},
           "initializers outside arena": {"config": {"session.use_device_allocator_for_initializers": "1"}},
           "no page-out": {"page_out": False}}


def resident_by_kind(model: str) -> dict:
    """Resident MiB now: anonymous memory, pages of the model's files, pages of onnxruntime's library."""
    kinds = {"anonymous_mb": 0, "model_files_mb": 0, "onnxruntime_code_mb": 0}
    folder, mapping = str(Path(model).parent), ""
    for line in Path("/proc/self/smaps").read_text().splitlines():
        fields = line.split()
        if fields and "-" in fields[0] and not fields[0].endswith(":"):
            mapping = fields[5] if len(fields) > 5 else ""
        elif fields and fields[0] == "Rss:":
            kib = int(fields[1])
            if mapping.startswith(folder + "/"):
                kinds["model_files_mb"] += kib
            elif "onnxruntime" in mapping:
                kinds["onnxruntime_code_mb"] += kib
        elif fields and fields[0] == "Anonymous:":
            kinds["anonymous_mb"] += int(fields[1])
    return {key: round(value / 1024, 1) for key, value in kinds.items()}


def tensor_spans(model: str) -> list[tuple[int, int, str]]:
    """(offset, length, kind) of every tensor in the model's external data file: 'prepacked' for a blob
    onnxruntime saved (an initializer's `prepacked_*` entry: 'KERNEL+hash|offset;length;...'), else
    'embedding', 'scales', 'int4 blocks' or 'other' by the initializer's name."""
    import onnx

    spans = []
    for tensor in onnx.load(model, load_external_data=False).graph.initializer:
        entries = {entry.key: entry.value for entry in tensor.external_data}
        if "offset" not in entries:
            continue
        kind = ("embedding" if "embed" in tensor.name else "scales" if tensor.name.endswith("_scales")
                else "int4 blocks" if tensor.name.endswith("_Q4") else "other")
        spans.append((int(entries["offset"]), int(entries["length"]), kind))
        for key, value in entries.items():
            if key.startswith("prepacked"):
                offset, length = value.split("|")[1].split(";")[:2]
                spans.append((int(offset), int(length), "prepacked"))
    return spans


def model_file_pages(model: str, spans: list[tuple[int, int, str]]) -> dict:
    """Resident MiB of the model's data file by the kind of tensor each mapping holds (a mapping
    onnxruntime made for one tensor rounds out to its neighbours' pages: it counts as the kind it overlaps most)."""
    kinds: dict[str, int] = {}
    folder, mapping = str(Path(model).parent) + "/", None
    for line in Path("/proc/self/smaps").read_text().splitlines():
        fields = line.split()
        if fields and "-" in fields[0] and not fields[0].endswith(":"):
            start, end = (int(value, 16) for value in fields[0].split("-"))
            mapping = (int(fields[2], 16), end - start) if len(fields) > 5 and fields[5].startswith(folder) else None
        elif fields and fields[0] == "Rss:" and mapping:
            low, high = mapping[0], mapping[0] + mapping[1]
            overlaps: dict[str, int] = {}
            for offset, length, kind in spans:
                overlaps[kind] = overlaps.get(kind, 0) + max(0, min(high, offset + length) - max(low, offset))
            kind = max(overlaps, key=overlaps.get) if overlaps and max(overlaps.values()) else "other"
            kinds[kind] = kinds.get(kind, 0) + int(fields[1])
    return {kind: round(kib / 1024, 1) for kind, kib in sorted(kinds.items())}


def vm(key: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {key} in /proc/self/status")


def settled_baseline() -> float:
    """The baseline's resident MiB once the imports' garbage is collected and given back (gc, then glibc's
    malloc_trim) and the peak restarted from there (/proc/self/clear_refs 5). Without it the baseline
    moved with what the imports left in the heap: 72.6 MiB when runner.py was compiled afresh (its .pyc
    stale), 68.6 MiB when read from its .pyc; the heap the first left free was then reused by the model's
    own allocations unseen, and the model's share looked 4 MiB smaller."""
    import ctypes
    import gc

    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass
    return vm("VmHWM")


def child(request: dict) -> dict:
    """In a fresh process: the baseline, then the decoder under the requested session options."""
    import importlib.util
    import time

    import numpy as np
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper

    def session_options():
        options = ort.SessionOptions()
        options.log_severity_level = 3
        options.intra_op_num_threads = request["threads"]
        options.inter_op_num_threads = 1
        options.enable_cpu_mem_arena = request.get("arena", True)
        options.enable_mem_pattern = request.get("mem_pattern", True)
        if not request.get("prepacking", True):
            options.add_session_config_entry("session.disable_prepacking", "1")
        for key, value in request.get("config", {}).items():
            options.add_session_config_entry(key, value)
        return options

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])
    trivial = helper.make_model(helper.make_graph([helper.make_node("Add", ["x", "x"], ["y"])], "t", [x], [y]),
                                opset_imports=[helper.make_opsetid("", 17)])
    del onnx
    small = ort.InferenceSession(trivial.SerializeToString(), session_options(), providers=["CPUExecutionProvider"])
    small.run(None, {"x": np.ones((1, 4), np.float32)})
    spec = importlib.util.spec_from_file_location("edgeward_runner", ROOT / "toolkit" / "devices" / "runner.py")
    runner = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(runner)  # its imports (hashlib: libcrypto, 3.3 MiB) are not the model's
    prompt_tokens = request.get("prompt_tokens", PROMPT_TOKENS)
    # the benchmark's prompt before the baseline: numpy.random's modules and the OpenSSL it initialises
    # (4.8 MiB resident) are the generator's, not the model's
    prompt = np.random.default_rng(0).integers(0, request["vocab_size"], size=prompt_tokens, dtype=np.int64)
    baseline_mb = settled_baseline()
    baseline_rss_mb = vm("VmRSS")
    baseline_kinds = resident_by_kind(request["model"])

    from toolkit.lm.huge_pages import huge_pages_for_what_loads
    from toolkit.lm.mapped_pages import paged_out_while_loading

    started = time.perf_counter()
    page_out = request.get("page_out", True)
    with (huge_pages_for_what_loads() if page_out else contextlib.nullcontext(),  # as open_session does
          paged_out_while_loading(Path(request["model"]).parent) if page_out else contextlib.nullcontext()):
        session = ort.InferenceSession(request["model"], session_options(), providers=["CPUExecutionProvider"])
    load_ms = (time.perf_counter() - started) * 1000
    load_peak_mb = vm("VmHWM")
    after_load_mb = vm("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")  # from here the peak is the decoding's alone
    decoder = runner.LmDecoder(LastLogitsOnly(session, np) if request.get("last_logits") else session, np,
                               request["head_dim"])
    if not request.get("last_logits"):
        decoder.keep = {}  # the runner feeds logits_to_keep itself where the graph has it: every position here
    rates = []
    for run in range(1 + request.get("runs", RUNS)):
        decoder.reset()
        token = int(np.argmax(decoder.forward(prompt)))
        first = time.perf_counter()
        for _ in range(NEW_TOKENS - 1):
            token = int(np.argmax(decoder.forward([token])))
        if run:
            rates.append((NEW_TOKENS - 1) / (time.perf_counter() - first))
    kinds, decode_peak_mb = resident_by_kind(request["model"]), vm("VmHWM")
    return {"baseline_peak_mb": round(baseline_mb, 1), "baseline_rss_mb": round(baseline_rss_mb, 1),
            "resident_after_decode_over_baseline": {key: round(kinds[key] - baseline_kinds[key], 1) for key in kinds},
            "rss_after_load_mb": round(after_load_mb, 1), "decode_peak_mb": round(decode_peak_mb, 1),
            "peak_rss_mb": round(max(load_peak_mb, decode_peak_mb), 1), "load_peak_mb": round(load_peak_mb, 1),
            "model_file_pages_mb": model_file_pages(request["model"], tensor_spans(request["model"])),
            "load_ms": round(load_ms, 1), "decode_tokens_per_s": round(float(np.median(rates)), 2),
            "kv_cache_bytes": int(sum(value.nbytes for value in decoder.past.values()))}


class LastLogitsOnly:
    """The session, fed `logits_to_keep` = [1] on every run: what a decoder loop does with the graph
    `edgeward quantize` writes for a language model (toolkit/lm/onnx_last_logits.py)."""

    def __init__(self, session, numpy):
        self.session, self.keep = session, {"logits_to_keep": numpy.ones(1, numpy.int64)}

    def __getattr__(self, name):
        return getattr(self.session, name)

    def run(self, names, feeds):
        return self.session.run(names, {**feeds, **self.keep})


def genai_child(request: dict) -> dict:
    """In a fresh process: onnxruntime-genai's own runtime on its own int4 model, for reference.

    Baseline: numpy and onnxruntime_genai imported. Then og.Model, and 1 warm-up + RUNS generations of
    the same prompt and new-token counts (greedy, no early stop); VmHWM read again."""
    import numpy as np
    import onnxruntime_genai as og

    ids = np.random.default_rng(0).integers(10, request["vocab_size"] - 10, size=PROMPT_TOKENS).astype(np.int32)
    baseline_mb, baseline_kinds = settled_baseline(), resident_by_kind(request["model"])
    model = og.Model(request["folder"])
    after_load_mb = vm("VmRSS")
    total = PROMPT_TOKENS + NEW_TOKENS
    for _ in range(1 + RUNS):
        params = og.GeneratorParams(model)
        params.set_search_options(max_length=total, min_length=total, do_sample=False)
        generator = og.Generator(model, params)
        generator.append_tokens(ids)
        while not generator.is_done():
            generator.generate_next_token()
        del generator
    kinds = resident_by_kind(request["model"])
    return {"baseline_peak_mb": round(baseline_mb, 1), "rss_after_load_mb": round(after_load_mb, 1),
            "peak_rss_mb": round(vm("VmHWM"), 1),
            "resident_after_decode_over_baseline": {key: round(kinds[key] - baseline_kinds[key], 1) for key in kinds}}


def genai_reference(work: Path) -> dict | None:
    """onnxruntime-genai's builder int4 model (block 32, its defaults) through genai's runtime, or None
    where onnxruntime-genai is not installed."""
    import shutil

    from toolkit.lm.estimate import graph_figures
    from toolkit.lm.folder import head_dim, read_config

    try:
        import onnxruntime_genai  # noqa: F401
    except ImportError:
        return None
    folder = work / "genai-int4"
    if not (folder / "genai_config.json").is_file():
        subprocess.run([sys.executable, "-m", "onnxruntime_genai.models.builder", "-i", str(work / "hf"), "-o",
                        str(folder), "-p", "int4", "-e", "cpu", "-c", str(work / "genai-cache"),
                        "--extra_options", "block_size=32", "hf_token=false"], check=True, capture_output=True,
                       text=True, timeout=1800)
        shutil.rmtree(work / "genai-cache", ignore_errors=True)
    config = json.loads((folder / "genai_config.json").read_text())
    for key in ("eos_token_id", "bos_token_id", "pad_token_id"):  # the random model's config names none
        if config["model"].get(key) is None:
            config["model"][key] = 1
    config["model"]["decoder"].setdefault("session_options", {}).update(intra_op_num_threads=1,
                                                                        inter_op_num_threads=1)
    (folder / "genai_config.json").write_text(json.dumps(config, indent=2))
    hf = read_config(work / "hf")
    figures = graph_figures(folder / "model.onnx", head_dim(hf))
    request = {"folder": str(folder), "model": str(folder / "model.onnx"), "vocab_size": hf["vocab_size"]}
    drop_from_page_cache(folder)
    done = subprocess.run([sys.executable, __file__, "--genai-child", json.dumps(request)], capture_output=True,
                          text=True, check=True, timeout=1800)
    measured = json.loads(done.stdout.strip().splitlines()[-1])
    budget_mb = (figures.weight_bytes + figures.kv_bytes_per_token * (PROMPT_TOKENS + NEW_TOKENS)) / 2**20
    over_mb = measured["peak_rss_mb"] - measured["baseline_peak_mb"]
    return {"variant": "onnxruntime-genai int4-b32, genai runtime", "threads": 1, "prompt_tokens": PROMPT_TOKENS,
            "weight_bytes": figures.weight_bytes, "budget_mb": round(budget_mb, 2), **measured,
            "model_share_mb": round(over_mb, 1), "ratio": round(over_mb / budget_mb, 3)}


def drop_from_page_cache(folder: Path) -> None:
    """Evict the model files' clean pages from the page cache, so every variant starts cold: a file just
    written (a prepacked copy) or read whole is otherwise all cached, and the kernel's fault-around then
    maps up to 16 cached neighbours of each page touched, counting them in the resident set."""
    import os

    for path in folder.iterdir():
        if path.is_file():
            with path.open("rb") as handle:
                os.fsync(handle.fileno())  # dirty pages (a file just written) stay cached until written back
                os.posix_fadvise(handle.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)


def measure(model: Path, options: dict, threads: int) -> dict:
    from toolkit.lm.folder import head_dim, read_config

    drop_from_page_cache(model.parent)
    config = read_config(model.parent)
    request = {"model": str(model), "threads": threads, "head_dim": head_dim(config),
               "vocab_size": config["vocab_size"], **options}
    done = subprocess.run([sys.executable, __file__, "--child", json.dumps(request)], capture_output=True, text=True,
                          check=True, timeout=1800)
    return json.loads(done.stdout.strip().splitlines()[-1])


def inline_copy(folder: Path, target: Path) -> Path:
    """The same graph with its initializers inside model.onnx (what `edgeward quantize` wrote before)."""
    import shutil

    import onnx

    target.mkdir(exist_ok=True)
    for side in folder.glob("*.json"):
        shutil.copyfile(side, target / side.name)
    onnx.save(onnx.load(str(folder / "model.onnx")), str(target / "model.onnx"))
    return target


def prepacked_copy(folder: Path, target: Path) -> Path:
    """onnxruntime's optimized graph of the model with MatMulNBits' prepacked blobs saved in its data file
    (`session.save_external_prepacked_constant_initializers`); a session opening it maps the blobs."""
    import shutil

    import onnxruntime as ort

    target.mkdir(exist_ok=True)
    for side in folder.glob("*.json"):
        shutil.copyfile(side, target / side.name)
    (target / "model.onnx.data").unlink(missing_ok=True)
    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.optimized_model_filepath = str(target / "model.onnx")
    options.add_session_config_entry("session.optimized_model_external_initializers_file_name", "model.onnx.data")
    options.add_session_config_entry("session.optimized_model_external_initializers_min_size_in_bytes", "1024")
    options.add_session_config_entry("session.save_external_prepacked_constant_initializers", "1")
    ort.InferenceSession(str(folder / "model.onnx"), options, providers=["CPUExecutionProvider"])
    return target


def fp32_compute_copy(folder: Path, target: Path) -> Path:
    """The same graph with every MatMulNBits' accuracy_level 1 (float compute), its data in model.onnx.data."""
    import shutil

    import onnx

    target.mkdir(exist_ok=True)
    for side in folder.glob("*.json"):
        shutil.copyfile(side, target / side.name)
    model = onnx.load(str(folder / "model.onnx"))
    for node in model.graph.node:
        for attribute in node.attribute:
            if node.op_type == "MatMulNBits" and attribute.name == "accuracy_level":
                attribute.i = 1
    (target / "model.onnx.data").unlink(missing_ok=True)
    onnx.save(model, str(target / "model.onnx"), save_as_external_data=True, location="model.onnx.data",
              size_threshold=1024)
    return target


# (variant, session options label, threads, timed runs, prompt tokens, last position's logits only).
# The first row is how the decode loops run the new default today (every position's logits); the second
# is the decoder fed logits_to_keep; the inline rows are the previous default.
PLAN = [("external data", "default", 1, RUNS, 64, False), ("external data", "default", 1, RUNS, 64, True),
        ("external data", "default", 2, RUNS, 64, True), ("external data", "arena off", 1, RUNS, 64, True),
        ("external data", "mem pattern off", 1, RUNS, 64, True),
        ("external data", "initializers outside arena", 1, RUNS, 64, True),
        ("external data", "no page-out", 1, RUNS, 64, True),
        ("external data", "default", 1, RUNS, 8, True),
        ("inline", "default", 1, RUNS, 64, False), ("inline", "default", 1, RUNS, 64, True),
        ("prepacked", "default", 1, RUNS, 64, True), ("prepacked", "default", 2, RUNS, 64, True),
        ("fp32 compute", "default", 1, RUNS, 64, True), ("fp32 compute, prepacked", "default", 1, RUNS, 64, True)]


def blob_sizes(model: Path) -> dict:
    """MiB of the prepacked blobs in a prepacked copy's data file against the int4 blocks and scales
    of the MatMulNBits they were packed from (the embedding table is not prepacked)."""
    spans = tensor_spans(str(model))
    packed = sum(length for _, length, kind in spans if kind == "prepacked")
    source = sum(length for _, length, kind in spans if kind in ("int4 blocks", "scales"))
    return {"prepacked_blobs_mb": round(packed / 2**20, 1), "int4_blocks_and_scales_mb": round(source / 2**20, 1),
            "data_file_mb": round((model.parent / "model.onnx.data").stat().st_size / 2**20, 1)}


def prepacked_lines(rows: list[dict], blobs: dict) -> list[str]:
    """What saving onnxruntime's prepacked weights in the data file changes, and what float compute does."""
    def row(variant):
        return next(r for r in rows if r["variant"] == f"int4-b32 {variant}" and r["options"] == "default"
                    and r["threads"] == 1 and r["prompt_tokens"] == PROMPT_TOKENS and r["last_logits_only"])

    plain, packed, fp32, fp32_packed = row("external data"), row("prepacked"), row("fp32 compute"), \
        row("fp32 compute, prepacked")
    pages, plain_pages = packed["model_file_pages_mb"], plain["model_file_pages_mb"]

    def load_over(r):
        return r["load_peak_mb"] - r["baseline_peak_mb"]

    def decode_over(r):
        return r["decode_peak_mb"] - r["baseline_peak_mb"]

    def resident(r):
        return sum(r["resident_after_decode_over_baseline"].values())

    return [
        f"- Prepacked weights in the data file (onnxruntime's `session.save_external_prepacked_constant_initializers`,"
        f" 'prepacked'): peak {packed['model_share_mb']} MiB over the baseline, ratio {packed['ratio']:.2f}, against "
        f"{plain['model_share_mb']} MiB ({plain['ratio']:.2f}) for the plain model; decode "
        f"{packed['decode_tokens_per_s']:.0f} against {plain['decode_tokens_per_s']:.0f} tokens/s. The saved data file "
        f"({blobs['data_file_mb']} MiB) holds the prepacked blobs ({blobs['prepacked_blobs_mb']} MiB for the "
        f"{blobs['int4_blocks_and_scales_mb']} MiB of MatMulNBits' int4 blocks and scales they are packed from: "
        "MLAS's int8-compute layout adds per-block sums and padding) beside the original tensors. Opened, "
        "onnxruntime maps the blobs instead of prepacking, so the bytes it allocated before now lie in resident "
        f"file pages (prepacked blobs {pages.get('prepacked', 0.0)} MiB; anonymous "
        f"{packed['resident_after_decode_over_baseline']['anonymous_mb']} against "
        f"{plain['resident_after_decode_over_baseline']['anonymous_mb']} MiB); MatMulNBits' scales stay mapped and "
        f"resident as before ({pages.get('scales', 0.0)} MiB against {plain_pages.get('scales', 0.0)}); and "
        "loading still maps and reads the original int4 blocks (strace: the whole data file mapped, nothing "
        "read() through a file call) before it drops them for the blobs: loading's peak is "
        f"{load_over(packed):.1f} MiB over the baseline against {load_over(plain):.1f} MiB for the plain model, "
        f"decoding's {decode_over(packed):.1f} against {decode_over(plain):.1f} MiB. Resident after decoding: "
        f"{resident(packed):.1f} against {resident(plain):.1f} MiB. The blobs cost about what the prepacked copies "
        "in the heap cost, and the data file is nearly twice the size: open_session keeps opening the plain model.",
        f"- MatMulNBits' float compute (accuracy_level 1 instead of the 4 quantize writes, 'fp32 compute'): peak "
        f"{fp32['model_share_mb']} MiB, ratio {fp32['ratio']:.2f}{'' if fp32['within_target'] else ' (miss)'} "
        f"(prepacked copy: {fp32_packed['model_share_mb']} MiB, {fp32_packed['ratio']:.2f}): its packed layout "
        f"carries no int8 block sums; but decode runs {fp32['decode_tokens_per_s']:.0f} tokens/s against "
        f"{plain['decode_tokens_per_s']:.0f} with int8 compute. A trade for the quantizer to offer, not taken here.",
    ]


def where_it_goes(rows: list[dict]) -> list[str]:
    """The analysis, from the measured rows: what loading costs, what decoding adds, which option helps."""
    def row(variant="external data", options="default", threads=1, prompt=PROMPT_TOKENS, last=True):
        return next(r for r in rows if r["variant"] == f"int4-b32 {variant}" and r["options"] == options
                    and r["threads"] == threads and r["prompt_tokens"] == prompt and r["last_logits_only"] == last)

    best, every, inline_old = row(), row(last=False), row("inline", last=False)
    no_page_out = row(options="no page-out")
    kinds = best["resident_after_decode_over_baseline"]
    weights_mb = best["weight_bytes"] / 2**20
    options = [r for r in rows if r["variant"] == "int4-b32 external data" and r["last_logits_only"]
               and r["threads"] == 1 and r["prompt_tokens"] == PROMPT_TOKENS and r["options"] != "default"]
    effects = "; ".join(f"{r['options']} {r['model_share_mb'] - best['model_share_mb']:+.1f} MiB "
                        f"({r['decode_tokens_per_s']:.0f} tokens/s)" for r in options)
    without_code = best["model_share_mb"] - kinds["onnxruntime_code_mb"]
    pages = best["model_file_pages_mb"]
    return [
        "Where the memory goes:",
        f"- External data: the previous default (inline, every position's logits) peaks {inline_old['model_share_mb']} "
        f"MiB over the baseline; the same graph with its initializers in model.onnx.data {every['model_share_mb']} MiB. "
        "onnxruntime keeps an inline model's parsed initializers beside the copies MatMulNBits prepacks; it maps "
        "an external-data file instead.",
        f"- Last position's logits: fed logits_to_keep = [1], the peak drops to {best['model_share_mb']} MiB "
        f"({every['model_share_mb'] - best['model_share_mb']:.1f} MiB less): the prefill no longer returns "
        f"{PROMPT_TOKENS} x 32000 float logits (7.8 MiB a copy, in onnxruntime's output and numpy's) nor computes "
        "them in the LM head.",
        f"- What is left ({best['model_share_mb']} MiB over the baseline for {weights_mb:.1f} MiB of weights + "
        f"{best['kv_cache_bytes_context'] / 2**20:.1f} MiB of KV), resident after decoding: anonymous "
        f"{kinds['anonymous_mb']} MiB (MatMulNBits' prepacked int8-compute weights, activations, the cache), "
        f"pages of model.onnx.data {kinds['model_files_mb']} MiB (the int4 embedding table and its scales, "
        f"{pages.get('embedding', 0.0)} MiB, which GatherBlockQuantized reads from the mapped file a row per "
        "token; the mappings are advised MADV_RANDOM after loading, so each row's fault brings in its own page, "
        "not the 128 KiB of readahead around it: 5.0 MiB of the table were resident without the advice; "
        f"MatMulNBits' scales, {pages.get('scales', 0.0)} MiB, which onnxruntime maps, reads while prepacking "
        "and keeps mapped, a duplicate of what the prepacked copies hold, which open_session pages out after "
        "loading; the int4 blocks it maps too, but unmaps after prepacking them), "
        f"onnxruntime's own code {kinds['onnxruntime_code_mb']} "
        f"MiB (the MatMulNBits, GroupQueryAttention and other kernels this model runs and the baseline's Add did "
        f"not: shared, read-only library pages, not the model's data). Without those code pages the share is "
        f"{without_code:.1f} MiB, ratio {without_code / best['budget_mb']:.2f}.",
        f"- Loading against decoding: onnxruntime maps model.onnx.data and reads MatMulNBits' int4 blocks from the "
        "mapping to prepack them, and keeps them mapped (and resident) until loading ends. open_session pages the "
        "mappings out every 2 ms while it loads (toolkit/lm/mapped_pages.py `paged_out_while_loading`): loading's "
        f"peak is {best['load_peak_mb'] - best['baseline_peak_mb']:.1f} MiB over the baseline, against "
        f"{no_page_out['load_peak_mb'] - no_page_out['baseline_peak_mb']:.1f} MiB without ('no page-out'); "
        f"decoding's is {best['decode_peak_mb'] - best['baseline_peak_mb']:.1f} MiB.",
        f"- Options (against the default's {best['model_share_mb']} MiB): {effects}. No session option "
        "changes the peak by more than the run-to-run noise (a few MiB between runs of this script); open_session "
        "keeps onnxruntime's defaults. What moves the peak is paging the model file's mappings out while and after "
        "loading and advising them random access (madvise MADV_PAGEOUT, then MADV_RANDOM: toolkit/lm/mapped_pages.py, "
        "which open_session and the device runner do on Linux): without both ('no page-out') the prepacked int4 "
        "blocks stay resident to the end of loading, MatMulNBits' scales stay resident twice and readahead brings "
        "in more of the embedding table.",
    ]


def genai_lines(reference: dict | None) -> list[str]:
    if reference is None:
        return ["", "onnxruntime-genai is not installed: its own runtime was not measured for reference."]
    kinds = reference["resident_after_decode_over_baseline"]
    return ["", f"For reference, onnxruntime-genai's builder int4 model of the same network (block 32, its CPU "
            f"defaults: int4 MatMuls and LM head, the embedding table float32) through genai's own runtime "
            f"(1 thread, the same prompt and new tokens; baseline = numpy + "
            f"onnxruntime_genai imported): peak − baseline {reference['model_share_mb']} MiB for "
            f"{reference['budget_mb']:.1f} MiB of weights + KV, ratio {reference['ratio']:.2f} (anonymous "
            f"{kinds['anonymous_mb']} MiB, model files {kinds['model_files_mb']} MiB, onnxruntime's code "
            f"{kinds['onnxruntime_code_mb']} MiB)."]


def report(rows: list[dict], reference: dict | None = None, blobs: dict | None = None) -> list[str]:
    """The Markdown table, its notes and the analysis."""
    lines = ["| variant | logits | session options | threads | prompt | weights + KV MiB | baseline MiB | "
             "after load − baseline MiB | peak RSS MiB | peak − baseline MiB (loading; decoding) | ratio (target ≤ 1.3) | "
             "decoding's ratio | decode tokens/s |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for row in rows:
        lines.append(f"| {row['variant']} | {'last' if row['last_logits_only'] else 'every position'} | "
                     f"{row['options']} | {row['threads']} | {row['prompt_tokens']} | {row['budget_mb']:.1f} | "
                     f"{row['baseline_peak_mb']:.1f} | {row['after_load_over_baseline_mb']:.1f} | "
                     f"{row['peak_rss_mb']:.1f} | {row['model_share_mb']:.1f} ({row['load_peak_mb'] - row['baseline_peak_mb']:.1f}; "
                     f"{row['decode_peak_mb'] - row['baseline_peak_mb']:.1f}) | "
                     f"{row['ratio']:.2f}{'' if row['within_target'] else ' MISS'} | {row['decode_ratio']:.2f} | "
                     f"{row['decode_tokens_per_s']:.1f} |")
    lines += ["", "bench_lm_decode.py's Qwen2-style decoder (55.4M parameters) quantized int4 block 32 "
              "(MatMulNBits int8 compute, int4 embedding); the prompt's tokens + "
              f"{NEW_TOKENS} new tokens. weights = every initializer's bytes as stored (int4 two a byte); KV = the "
              "cache for the whole context. Baseline = python + numpy + onnxruntime + the device runner module "
              "with a trivial session run (same options). 'external data' is the model.onnx + model.onnx.data "
              "`edgeward quantize` now writes for a language model; 'inline' the same graph in one model.onnx (the "
              "previous default). logits 'last' = the decode loop feeds logits_to_keep = [1]. Each row a fresh "
              "process; decode tokens/s the median of the timed runs after 1 warm-up on a shared 2-core machine "
              "(noisy). 'prepacked' = the model onnxruntime saved with its prepacked weights in the data file; "
              "'fp32 compute' = MatMulNBits accuracy_level 1.", "", *where_it_goes(rows),
              *(prepacked_lines(rows, blobs) if blobs else []), *genai_lines(reference)]
    return lines


def main() -> None:
    from benchmarks.bench_lm_decode import build
    from toolkit.export import export
    from toolkit.lm.estimate import graph_figures
    from toolkit.lm.folder import head_dim, read_config
    from toolkit.quantize import quantize

    reuse = Path(sys.argv[1]) if len(sys.argv) > 1 else None  # a folder of an earlier run: measure only
    work = reuse or Path(tempfile.mkdtemp(prefix="edgeward-lm-memory-"))
    if reuse is None:
        build(work / "hf")
        export(str(work / "hf"), "onnx", work / "fp32")
        quantize(work / "fp32", "int4-weight", work / "int4-b32", block_size=32)
    fp32_compute = fp32_compute_copy(work / "int4-b32", work / "int4-fp32-compute")
    variants = {"external data": work / "int4-b32", "inline": inline_copy(work / "int4-b32", work / "int4-inline"),
                "prepacked": prepacked_copy(work / "int4-b32", work / "int4-prepacked"),
                "fp32 compute": fp32_compute,
                "fp32 compute, prepacked": prepacked_copy(fp32_compute, work / "int4-fp32-compute-prepacked")}
    if not (variants["external data"] / "model.onnx.data").is_file():
        raise SystemExit(f"{variants['external data']} has no model.onnx.data: quantize it again (no folder argument)")
    figures = graph_figures(variants["inline"] / "model.onnx", head_dim(read_config(variants["inline"])))
    rows = []
    for variant, label, threads, runs, prompt_tokens, last in PLAN:
        kv_bytes = figures.kv_bytes_per_token * (prompt_tokens + NEW_TOKENS)
        budget_mb = (figures.weight_bytes + kv_bytes) / 2**20
        measured = measure(variants[variant] / "model.onnx", {**OPTIONS[label], "runs": runs,
                                                              "prompt_tokens": prompt_tokens, "last_logits": last},
                           threads)
        over_mb = measured["peak_rss_mb"] - measured["baseline_peak_mb"]
        rows.append({"variant": f"int4-b32 {variant}", "options": label, "threads": threads, "runs": runs,
                     "prompt_tokens": prompt_tokens, "last_logits_only": last,
                     "weight_bytes": figures.weight_bytes, "kv_cache_bytes_context": kv_bytes,
                     "budget_mb": round(budget_mb, 2), **measured, "model_share_mb": round(over_mb, 1),
                     "after_load_over_baseline_mb": round(measured["rss_after_load_mb"] - measured["baseline_rss_mb"], 1),
                     "ratio": round(over_mb / budget_mb, 3), "within_target": over_mb / budget_mb <= TARGET,
                     "decode_ratio": round((measured["decode_peak_mb"] - measured["baseline_peak_mb"]) / budget_mb, 3)})
    reference = genai_reference(work)
    blobs = blob_sizes(variants["prepacked"] / "model.onnx")
    lines = report(rows, reference, blobs)
    write_results("lm_memory", {"model": "qwen2 h512 l8 kv2 vocab32000, int4 block 32",
                                "prompt_tokens": PROMPT_TOKENS, "new_tokens": NEW_TOKENS, "target_ratio": TARGET,
                                "rows": rows, "genai_reference": reference,
                                "prepacked_data_file": blobs}, lines)


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == "--child":
        print(json.dumps(child(json.loads(sys.argv[2]))))
    elif len(sys.argv) > 2 and sys.argv[1] == "--genai-child":
        print(json.dumps(genai_child(json.loads(sys.argv[2]))))
    else:
        main()
