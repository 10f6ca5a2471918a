"""Run a LiteRT language model: its `prefill_N` signatures over the prompt, then `decode` one token a step.

The model (see `toolkit.lm.litert_export`) keeps no state: every signature takes `tokens`,
`input_pos` and the whole KV cache (`kv_cache_k_i`, `kv_cache_v_i`, one slot per position up to
the cache length) and returns `logits` and the updated cache, which is fed back on the next call.
A prefill signature has a fixed length N: a shorter run of tokens is padded, and the padded slots
hold junk that the causal mask hides until a later token overwrites them. The interface matches
`toolkit.lm.decoder.KvDecoder` (reset, forward, all_logits, past_length, context), so generation,
validation and bench treat an ONNX and a LiteRT model alike.

The signatures' contract (what a board-side loop must feed) is unchanged: inputs `tokens` (1, N) and
`input_pos` (N,) int32 and `kv_cache_{k,v}_i` (1, cache length, kv heads, head size) float32; outputs
`logits` (1, N, vocab) and the updated `kv_cache_{k,v}_i`. Only the feeding changed. On the host the
decoder runs a `CompiledModel` (`open_model`) whose two sets of cache TensorBuffers swap between input
and output each step (no copy of the cache, one XNNPACK weight cache for all signatures); given an
`Interpreter` (`open_interpreter`) it writes into and reads from the interpreter's own tensor buffers
(`SignatureTensors`, one copy of the cache per step) instead of going through `SignatureRunner`, which
copies every input in and every output out. A decode step's time grows with the cache length (the graph
reads and rewrites the whole cache each step), so export with `--cache-length` near the prompt + new
tokens a run needs.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

import numpy as np

from toolkit.errors import BadInput, Unsupported

logger = logging.getLogger(__name__)

DECODE = "decode"
PREFILL = re.compile(r"^prefill_(\d+)$")


def open_interpreter(model_path: Path, threads: int | None = None):
    """ai-edge-litert's interpreter on a checked .tflite file."""
    from toolkit.safety.tflite import check_tflite_file

    check_tflite_file(model_path)
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        from toolkit.errors import missing_library

        raise missing_library("ai-edge-litert") from None
    from toolkit.common.quiet import quiet

    with quiet():  # LiteRT logs its delegate on stderr
        return Interpreter(model_path=str(model_path), num_threads=threads or None)


def open_model(model_path: Path, threads: int | None = None):
    """ai-edge-litert's `CompiledModel` (CPU, XNNPACK) on a checked .tflite file, what the decoder runs by default.

    XNNPACK packs each signature's int4 weights separately unless it is given a weight cache; the in-memory
    one (":memory:") packs them once for all signatures (about 60 MiB less for the 55M benchmark model)."""
    from toolkit.safety.tflite import check_tflite_file

    check_tflite_file(model_path)
    try:
        from ai_edge_litert.compiled_model import CompiledModel
        from ai_edge_litert.options import CpuOptions, HardwareAccelerator, Options
    except ImportError:
        from toolkit.errors import missing_library

        raise missing_library("ai-edge-litert") from None
    from toolkit.common.quiet import quiet

    options = Options(hardware_accelerators=HardwareAccelerator.CPU,
                      cpu_options=CpuOptions(num_threads=threads or 0, xnnpack_weight_cache_path=":memory:"))
    with quiet():  # LiteRT logs its environment and accelerators on stderr
        return CompiledModel.from_file(str(model_path), options=options)


def cache_length(model_path: Path) -> int:
    """The KV cache positions of a LiteRT language model (its decode signature's kv_cache_* inputs)."""
    return LiteRtDecoder(open_interpreter(model_path)).context


def check_signatures(names) -> list[int]:
    """The prefill lengths of a model with prefill_N and decode signatures; Unsupported otherwise."""
    prefill = sorted(int(m.group(1)) for m in map(PREFILL.match, names) if m)
    if DECODE not in names or not prefill:
        raise Unsupported("the TFLite model has no prefill_N and decode signatures: not a language model "
                          "with a KV cache (export the Hugging Face folder with edgeward export DIR --to tflite)")
    return prefill


def check_cache(cache_specs: dict) -> int:
    """The cache length (positions) of the decode signature's kv_cache_* inputs."""
    if not cache_specs:
        raise Unsupported("the TFLite model's decode signature takes no kv_cache_* inputs")
    return int(next(iter(cache_specs.values()))[0][1])  # (batch, cache length, kv heads, head size)


class SignatureTensors:
    """One signature's input and output tensors, read and written in place in an Interpreter's buffers.

    ai-edge-litert's `SignatureRunner` resizes and reallocates every input, copies each array in and
    every output out on each call: for a decode step that is the whole KV cache twice (2 MiB each way
    for 8 layers x 256 positions x 2 kv heads x 64, 8 MiB at 1,024 positions), plus a fresh array per
    output. The shapes here are fixed, so the tensors are allocated once and reached through numpy views
    of the interpreter's buffers (`InterpreterWrapper.tensor`, what `Interpreter.tensor` does for the
    first subgraph only). A view is taken again at each use and never kept across an invoke."""

    def __init__(self, interpreter, key: str):
        runner = interpreter.get_signature_runner(key)
        self.inputs = {name: item["index"] for name, item in runner.get_input_details().items()}
        self.outputs = {name: item["index"] for name, item in runner.get_output_details().items()}
        self.wrapper = interpreter._interpreter  # the pybind wrapper that SignatureRunner itself drives
        self.base = interpreter
        self.subgraph = self.wrapper.GetSubgraphIndexFromSignature(key)
        self.allocated = False

    def view(self, index: int) -> np.ndarray:
        return self.wrapper.tensor(self.base, index, self.subgraph)

    def input(self, name: str) -> np.ndarray:
        return self.view(self.inputs[name])

    def output(self, name: str) -> np.ndarray:
        return self.view(self.outputs[name])

    def allocate(self) -> None:
        if not self.allocated:
            self.wrapper.AllocateTensors(self.subgraph)
            self.allocated = True

    def invoke(self) -> None:
        self.wrapper.Invoke(self.subgraph)


class InterpreterCache:
    """The signatures of an `Interpreter` (what a board without `CompiledModel` has). After a run the cache is
    in that signature's output tensors; the next run copies it once into its own input tensors (one copy
    of the cache per token, not the four copies and allocations of `SignatureRunner`)."""

    def __init__(self, interpreter):
        self.prefill_lengths = check_signatures(interpreter.get_signature_list())
        details = interpreter.get_signature_runner(DECODE).get_input_details()
        self.cache_specs = {name: (tuple(int(x) for x in item["shape"]), item["dtype"])
                            for name, item in details.items() if name.startswith("kv_cache_")}
        self.context = check_cache(self.cache_specs)
        if any(-1 in item["shape_signature"] for item in details.values()):
            raise Unsupported("the TFLite model's decode signature has inputs of unknown shape")
        self.signatures = {key: SignatureTensors(interpreter, key)
                           for key in [DECODE] + [f"prefill_{n}" for n in self.prefill_lengths]}
        self.decode_signature = self.signatures[DECODE]  # for a profiler to wrap its invoke
        self.reset()

    def reset(self) -> None:
        self.holder: SignatureTensors | None = None  # whose outputs hold the cache; None: empty
        self.kept: dict | None = None  # a cache restored from arrays, fed on the next run

    def restore(self, arrays: dict) -> None:
        self.holder, self.kept = None, arrays

    @property
    def past(self) -> dict:
        if self.kept is not None:
            return {name: array.copy() for name, array in self.kept.items()}
        if self.holder is None:
            return {name: np.zeros(shape, dtype) for name, (shape, dtype) in self.cache_specs.items()}
        return {name: self.holder.output(name).copy() for name in self.cache_specs}

    def feed_cache(self, signature: SignatureTensors) -> None:
        for name in self.cache_specs:
            target = signature.input(name)
            if self.kept is not None:
                np.copyto(target, self.kept[name])
            elif self.holder is None:
                target.fill(0)
            else:
                np.copyto(target, self.holder.output(name))

    def run(self, key: str, ids: np.ndarray, start: int) -> np.ndarray:
        signature = self.signatures[key]
        if signature.allocated:
            self.feed_and_invoke(signature, ids, start)
        else:  # LiteRT logs its XNNPACK delegate on stderr when a signature is first prepared and run
            from toolkit.common.quiet import quiet

            with quiet():
                signature.allocate()
                self.feed_and_invoke(signature, ids, start)
        self.holder, self.kept = signature, None
        return signature.output("logits")[0].copy()

    def feed_and_invoke(self, signature: SignatureTensors, ids: np.ndarray, start: int) -> None:
        signature.input("tokens")[...] = ids.reshape(1, -1)
        signature.input("input_pos")[...] = np.arange(start, start + ids.size)
        self.feed_cache(signature)
        signature.invoke()


class CompiledModelCache:
    """The signatures of a `CompiledModel`, the cache in two sets of TensorBuffers that swap roles each run:
    one is read as `kv_cache_*` inputs while the other is written as the outputs, so no cache is copied
    between steps; every signature shares the two sets (their cache tensors have one shape)."""

    def __init__(self, model):
        self.model = model
        self.prefill_lengths = check_signatures(list(model.get_signature_list()))
        details = model.get_input_tensor_details(DECODE)
        self.cache_specs = {name: (tuple(int(x) for x in item["shape"]), np.dtype(item["dtype"]))
                            for name, item in details.items() if name.startswith("kv_cache_")}
        self.context = check_cache(self.cache_specs)
        self.vocab = int(model.get_output_tensor_details(DECODE)["logits"]["shape"][-1])
        self.sets = [{name: model.create_input_buffer_by_name(DECODE, name) for name in self.cache_specs},
                     {name: model.create_output_buffer_by_name(DECODE, name) for name in self.cache_specs}]
        self.io = {key: (model.create_input_buffer_by_name(key, "tokens"),
                         model.create_input_buffer_by_name(key, "input_pos"),
                         model.create_output_buffer_by_name(key, "logits"))
                   for key in [DECODE] + [f"prefill_{n}" for n in self.prefill_lengths]}
        self.token_dtype = np.dtype(details["tokens"]["dtype"])
        self.position_dtype = np.dtype(details["input_pos"]["dtype"])
        self.started: set[str] = set()
        self.reset()

    def reset(self) -> None:
        self.restore({name: np.zeros(shape, dtype) for name, (shape, dtype) in self.cache_specs.items()})

    def restore(self, arrays: dict) -> None:
        self.current = 0
        for name, array in arrays.items():
            self.sets[0][name].write(array)

    @property
    def past(self) -> dict:
        return {name: self.sets[self.current][name].read(int(np.prod(shape)), dtype).reshape(shape)
                for name, (shape, dtype) in self.cache_specs.items()}

    def run(self, key: str, ids: np.ndarray, start: int) -> np.ndarray:
        tokens, positions, logits = self.io[key]
        tokens.write(ids.reshape(1, -1).astype(self.token_dtype))
        positions.write(np.arange(start, start + ids.size, dtype=self.position_dtype))
        feeds = {"tokens": tokens, "input_pos": positions, **self.sets[self.current]}
        outputs = {"logits": logits, **self.sets[1 - self.current]}
        if key in self.started:
            self.model.run_by_name(key, feeds, outputs)
        else:  # LiteRT logs its XNNPACK delegate on stderr at a signature's first run
            from toolkit.common.quiet import quiet

            with quiet():
                self.model.run_by_name(key, feeds, outputs)
            self.started.add(key)
        self.current = 1 - self.current
        return logits.read(ids.size * self.vocab, np.float32).reshape(ids.size, self.vocab)


class LiteRtDecoder:
    """One sequence through a LiteRT model with prefill and decode signatures; `past_length` tokens cached.
    `runtime`: a `CompiledModel` (`open_model`, the default on the host) or an `Interpreter` (`open_interpreter`)."""

    def __init__(self, runtime):
        self.signatures = InterpreterCache(runtime) if hasattr(runtime, "get_signature_runner") \
            else CompiledModelCache(runtime)
        self.prefill_lengths = self.signatures.prefill_lengths
        self.cache_specs = self.signatures.cache_specs
        self.context = self.signatures.context
        self.past_length = 0

    def reset(self) -> None:
        self.signatures.reset()
        self.past_length = 0

    def reserve(self, tokens: int) -> None:
        """Nothing to size: the export fixed the cache's length (KvDecoder.reserve sizes its buffers)."""

    @property
    def past(self) -> dict:
        """A copy of the KV cache arrays (named as KvDecoder names its cache, for code that measures it)."""
        return self.signatures.past

    def _run(self, key: str, ids: np.ndarray, start: int) -> np.ndarray:
        """Run one signature on `ids` at positions start..; keeps the new cache; returns logits (len(ids), vocab)."""
        return self.signatures.run(key, ids, start)

    def _prefill(self, ids: np.ndarray, start: int) -> np.ndarray:
        """Logits for `ids` placed at positions start..: through prefill windows where a whole window fits
        the cache, the rest one token at a time through decode."""
        pieces = []
        done = 0
        while done < ids.size:
            left, position = ids.size - done, start + done
            fitting = [n for n in self.prefill_lengths if position + n <= self.context]
            if left == 1 or not fitting:
                pieces.append(self._run(DECODE, ids[done:done + 1], position))
                done += 1
                continue
            length = next((n for n in fitting if n >= left), fitting[-1])
            count = min(left, length)
            window = np.zeros(length, dtype=np.int64)
            window[:count] = ids[done:done + count]
            pieces.append(self._run(f"prefill_{length}", window, position)[:count])
            done += count
        return np.concatenate(pieces)

    def forward(self, token_ids, copy: bool = True) -> np.ndarray:
        """Feed new tokens after the cached ones; returns the logits of the last one (vocab,), the
        caller's to keep whatever `copy` says (KvDecoder.forward's `copy=False` returns a reused buffer)."""
        ids = np.asarray(token_ids, dtype=np.int64).reshape(-1)
        if ids.size == 0:
            raise BadInput("the prompt is empty: it tokenizes to no tokens")
        total = self.past_length + ids.size
        if total > self.context:
            raise BadInput(f"{total} tokens do not fit the model's KV cache of {self.context} positions")
        logits = self._prefill(ids, self.past_length)
        self.past_length = total
        return logits[-1]

    def all_logits(self, token_ids) -> np.ndarray:
        """The logits at every position of `token_ids` from an empty cache (seq, vocab); the cache is untouched."""
        ids = np.asarray(token_ids, dtype=np.int64).reshape(-1)
        if ids.size > self.context:
            raise BadInput(f"{ids.size} tokens do not fit the model's KV cache of {self.context} positions")
        kept, kept_length = self.past, self.past_length
        self.reset()
        try:
            return self._prefill(ids, 0)
        finally:
            self.signatures.restore(kept)
            self.past_length = kept_length
