"""Run an exported decoder with its KV cache: one prefill over the prompt, then one token a step.

The graph is optimum's text-generation-with-past export: inputs `input_ids`, `attention_mask`,
`position_ids` (where the family takes them) and `past_key_values.N.key/value`; outputs `logits`
and `present.N.key/value`, which become the next step's past.
"""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path

import numpy as np

from toolkit.errors import BadInput, Unsupported
from toolkit.lm.huge_pages import huge_pages_for_what_loads
from toolkit.lm.mapped_pages import paged_out_while_loading

logger = logging.getLogger(__name__)

PAST_PREFIX = "past_key_values."
PRESENT_PREFIX = "present."
GENAI_PRODUCER = "onnxruntime-genai"  # the model builder's producer_name
LOGITS_TO_KEEP = "logits_to_keep"  # a quantized LM's optional input (toolkit.lm.onnx_last_logits)
KEEP_LAST = np.ones(1, dtype=np.int64)
ORT_TYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(bfloat16)": np.float32}


def open_session(model_path: Path, threads: int | None = None, huge_pages: bool = True):
    """An onnxruntime CPU session on a checked ONNX file; with `huge_pages`, what it loads into memory is
    collapsed into transparent huge pages in the background (toolkit/lm/huge_pages.py)."""
    import onnxruntime as ort

    from toolkit.safety.onnx import check_onnx_file

    check_onnx_file(model_path)
    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = int(threads)
        options.inter_op_num_threads = 1
    options.log_severity_level = 3
    with (huge_pages_for_what_loads() if huge_pages else contextlib.nullcontext(),
          paged_out_while_loading(Path(model_path).parent)):  # what prepacking read and onnxruntime keeps mapped
        return ort.InferenceSession(str(model_path), options, providers=["CPUExecutionProvider"])


class KvDecoder:
    """One sequence (batch 1) through a with-past decoder; `past_length` tokens are cached.

    onnxruntime-genai's builder graphs (GroupQueryAttention) run in share-buffer mode, as onnxruntime-genai
    runs them: one preallocated cache buffer per past input, bound through IOBinding as both the past and
    the present, which GroupQueryAttention updates in place (the attention mask's length says how much of
    it is filled); input ids and logits live in bound buffers too, so a step copies nothing but its logits
    row. Other graphs (optimum's) get the grown cache back each step and feed it in as the next past.
    """

    def __init__(self, session, context: int | None = None, head_dim: int | None = None):
        self.session = session
        self.context = context
        self.head_dim = head_dim  # for a cache input whose last axis is symbolic (onnxruntime-genai's graphs)
        self.input_names = [item.name for item in session.get_inputs()]
        self.past_specs = {item.name: item for item in session.get_inputs() if item.name.startswith(PAST_PREFIX)}
        if "input_ids" not in self.input_names or not self.past_specs:
            raise Unsupported("the ONNX model is not a decoder with a KV cache (no input_ids or past_key_values.* "
                              "inputs): export the Hugging Face folder with edgeward export DIR --to onnx")
        self.output_names = [item.name for item in session.get_outputs()]
        self.shares_buffer = shares_cache_buffer(session)
        # generation reads the last position only: where the graph can, it computes only that row of logits
        self.keeps_last = LOGITS_TO_KEEP in {item.name for item in session.get_overridable_initializers()}
        self.logits_dtype = next((ORT_TYPES.get(item.type, np.float32) for item in session.get_outputs()
                                  if item.name == "logits"), np.float32)
        self.cache: CacheBuffers | None = None
        self.planned: int | None = None
        self.reset()

    def reset(self) -> None:
        self.past_length = 0
        if self.shares_buffer:  # the buffers are kept: the attention mask says how much of them is filled
            if self.cache is None:
                self.cache = CacheBuffers(self)
        else:
            self.cache = None
            self._past = {name: self._empty(spec) for name, spec in self.past_specs.items()}

    def reserve(self, tokens: int) -> None:
        """Size the share-buffer cache for `tokens` positions (the prompt plus the new tokens) when it is
        next allocated, rather than doubling it from MIN_CAPACITY: the cache then holds the context used."""
        self.planned = int(tokens)

    @property
    def past(self) -> dict:
        """The cached keys and values, `past_length` long (views into the buffers in share-buffer mode)."""
        if self.cache is not None:
            return self.cache.filled(self.past_length)
        return self._past

    def _empty(self, spec, length: int = 0) -> np.ndarray:
        return zero_cache(spec, self.head_dim, length)

    def _feeds(self, ids: np.ndarray, past: dict, past_length: int) -> dict:
        total = past_length + ids.shape[1]
        feeds = {"input_ids": ids, **past}
        if "attention_mask" in self.input_names:
            feeds["attention_mask"] = np.ones((1, total), dtype=np.int64)
        if "position_ids" in self.input_names:
            feeds["position_ids"] = np.arange(past_length, total, dtype=np.int64).reshape(1, -1)
        return feeds

    def forward(self, token_ids, copy: bool = True) -> np.ndarray:
        """Feed new tokens after the cached ones; returns the logits of the last one (vocab,). With
        `copy=False` the share-buffer loop returns a view of its logits buffer, valid until the next
        call: for a caller that reads it at once (greedy decoding, sampling), a 128 KB copy saved a step.
        Greedy callers take `int(logits.argmax())`: the method, not np.argmax's Python wrapper (below)."""
        ids = np.asarray(token_ids, dtype=np.int64).reshape(1, -1)
        if ids.shape[1] == 0:
            raise BadInput("the prompt is empty: it tokenizes to no tokens")
        total = self.past_length + ids.shape[1]
        if self.context is not None and total > self.context:
            raise BadInput(f"{total} tokens do not fit the model's context of {self.context} tokens")
        logits = None
        if self.cache is not None:
            try:
                if self.keeps_last and not self.past_length:
                    logits = self.cache.prefill(ids)[0, -1]
                else:
                    logits = self.cache.run(ids, self.past_length)
            except Exception as error:  # onnxruntime's own exception types; only the first run may fall back
                if self.past_length:
                    raise
                logger.warning("share-buffer KV cache refused (%s): feeding the cache back each step instead",
                               str(error).splitlines()[0])
                self.shares_buffer = False
                self.reset()
        if logits is None:
            feeds = self._feeds(ids, self._past, self.past_length)
            if self.keeps_last:
                feeds[LOGITS_TO_KEEP] = KEEP_LAST
            outputs = dict(zip(self.output_names, self.session.run(None, feeds), strict=True))
            for name in self._past:
                self._past[name] = outputs[PRESENT_PREFIX + name[len(PAST_PREFIX):]]
            logits = outputs["logits"][0, -1]
        self.past_length = total
        return logits.copy() if copy else logits  # the next step reuses the buffer

    def all_logits(self, token_ids) -> np.ndarray:
        """The logits at every position of `token_ids` from an empty cache (seq, vocab); the cache is untouched."""
        ids = np.asarray(token_ids, dtype=np.int64).reshape(1, -1)
        empty = {name: self._empty(spec) for name, spec in self.past_specs.items()}
        return self.session.run(["logits"], self._feeds(ids, empty, 0))[0][0]


def zero_cache(spec, head_dim: int | None, length: int = 0) -> np.ndarray:
    """A zero cache for the past input `spec`, `length` tokens long (batch 1)."""
    shape = [1 if i == 0 else (dim if isinstance(dim, int) else 0) for i, dim in enumerate(spec.shape)]
    if len(shape) == 4 and shape[3] == 0 and head_dim:
        shape[3] = head_dim
    if len(shape) != 4:
        raise Unsupported(f"unexpected KV cache input {spec.name} of shape {spec.shape}")
    shape[2] = length
    return np.zeros(shape, dtype=ORT_TYPES.get(spec.type, np.float32))


def page_aligned(array: np.ndarray) -> np.ndarray:
    """A zeroed array of `array`'s shape and type that starts on a page, as the buffers onnxruntime
    allocates do: numpy puts those under 128 KiB (the KV cache of a short context, as `reserve` sizes it)
    on the heap at any 16-byte offset. With page-aligned buffers, the reserved 128-position cache decoded
    as fast as the 256-position one numpy had mapped page-aligned (benchmarks/bench_lm_genai.py's model;
    unaligned it was 3-7% slower in two runs, a difference near this machine's noise)."""
    page = 4096
    raw = np.zeros(array.nbytes + page, dtype=np.uint8)
    start = -raw.ctypes.data % page
    return raw[start:start + array.nbytes].view(array.dtype).reshape(array.shape)


def shares_cache_buffer(session) -> bool:
    """True for onnxruntime-genai's builder graphs (GroupQueryAttention, which reads how much of the past
    buffer is filled from the attention mask and may write the present into it). A graph that concatenates
    instead fails the first share-buffer run on the present's shape, and the decoder falls back."""
    inputs = session.get_inputs()
    return (session.get_modelmeta().producer_name == GENAI_PRODUCER
            and "attention_mask" in [item.name for item in inputs]
            and all(len(item.shape) == 4 for item in inputs if item.name.startswith(PAST_PREFIX)))


class CacheBuffers:
    """Share-buffer mode's state: one preallocated cache per past input, bound as past and present,
    grown (doubled, up to the context) when a step would not fit; the attention mask and the logits
    live in buffers reused from step to step.

    A step's Python runs with its caches cold (the step before streamed every weight through them), so
    what it does between two runs costs several times what it does in a warm loop: making the logits
    row's view took 16-17 µs a step here and np.argmax of it 58-63 µs against 39 for the array's own
    argmax (Qwen2-style 55M model, 1 thread, against 2-4 µs warm). The row's view is made once, where
    its buffer is bound (`bind_step`). With argmax as a method too, 60 alternating in-process rounds
    against the loop before decoded 1.02x as fast at 1 thread (ahead in 38) and 1.01x at 2 (ahead in 32)."""

    MIN_CAPACITY = 256
    MASK_BLOCK = 64  # attention-mask OrtValues made at once, ahead of the steps that bind them

    def __init__(self, decoder: KvDecoder):
        self.decoder = decoder
        self.binding = decoder.session.io_binding()
        self.capacity = 0
        self.buffers: dict[str, np.ndarray] = {}
        self.mask = np.ones((1, 0), dtype=np.int64)
        self.mask_start, self.mask_values = 0, []  # OrtValues of mask[:, :n], n from mask_start on
        self.steps: dict[int, tuple[np.ndarray, np.ndarray]] = {}  # step length -> (ids, logits) buffers
        self.ids = np.zeros((1, 0), dtype=np.int64)
        self.logits = np.empty((1, 0, 0), dtype=decoder.logits_dtype)
        self.last_logits = np.empty(0, dtype=decoder.logits_dtype)  # the last row of `logits`, made where bound
        self.positions = "position_ids" in decoder.input_names

    def filled(self, length: int) -> dict:
        return {name: buffer[:, :, :length] for name, buffer in self.buffers.items()}

    def grow(self, needed: int, past_length: int) -> None:
        """Room for `needed` tokens: the reserved size, else the next power of two from MIN_CAPACITY,
        capped at the context."""
        from onnxruntime import OrtValue

        capacity = max(self.decoder.planned or self.MIN_CAPACITY, self.capacity)
        while capacity < needed:
            capacity *= 2
        if self.decoder.context is not None:
            capacity = max(needed, min(capacity, self.decoder.context))
        for name, spec in self.decoder.past_specs.items():
            buffer = page_aligned(zero_cache(spec, self.decoder.head_dim, capacity))
            if name in self.buffers:
                buffer[:, :, :past_length] = self.buffers[name][:, :, :past_length]
            self.buffers[name] = buffer
            value = OrtValue.ortvalue_from_numpy(buffer)  # shares the numpy memory; the buffer outlives it
            self.binding.bind_ortvalue_input(name, value)
            self.binding.bind_ortvalue_output(PRESENT_PREFIX + name[len(PAST_PREFIX):], value)
        self.mask = np.ones((1, capacity), dtype=np.int64)
        self.mask_values = []  # they view the old mask
        self.capacity = capacity
        logger.debug("KV cache buffers hold %d tokens", capacity)

    def run(self, ids: np.ndarray, past_length: int) -> np.ndarray:
        total = past_length + ids.shape[1]
        if total > self.capacity:
            self.grow(total, past_length)
        if self.ids.shape != ids.shape:  # a new step length: the prefill, then 1 a step
            self.bind_step(ids.shape[1])
        self.ids[...] = ids
        self.binding.bind_ortvalue_input("attention_mask", self.mask_value(total))
        if self.positions:
            self.binding.bind_cpu_input("position_ids", np.arange(past_length, total, dtype=np.int64).reshape(1, -1))
        self.decoder.session.run_with_iobinding(self.binding)
        return self.last_logits

    def mask_value(self, total: int):
        """The attention mask [1, total] as an OrtValue over the mask buffer, made MASK_BLOCK lengths at a
        time: binding one made ahead takes about a third of making it at the step (16 against 50-70 µs
        measured, the interpreter's caches cold after each run), a few percent of a decode step."""
        index = total - self.mask_start
        if not 0 <= index < len(self.mask_values):
            from onnxruntime import OrtValue

            self.mask_start, index = total, 0
            self.mask_values = [OrtValue.ortvalue_from_numpy(self.mask[:, :length])
                                for length in range(total, min(total + self.MASK_BLOCK, self.capacity + 1))]
        return self.mask_values[index]

    def prefill(self, ids: np.ndarray) -> np.ndarray:
        """The prompt from an empty cache with the last position's logits only: IOBinding cannot feed
        `logits_to_keep` (an initializer-backed input), so this step runs unbound and its present is
        copied into the buffers."""
        decoder, total = self.decoder, ids.shape[1]
        empty = {name: zero_cache(spec, decoder.head_dim) for name, spec in decoder.past_specs.items()}
        feeds = {**decoder._feeds(ids, empty, 0), LOGITS_TO_KEEP: KEEP_LAST}
        outputs = dict(zip(decoder.output_names, decoder.session.run(None, feeds), strict=True))
        if total > self.capacity:
            self.grow(total, 0)
        for name, buffer in self.buffers.items():
            buffer[:, :, :total] = outputs[PRESENT_PREFIX + name[len(PAST_PREFIX):]]
        return outputs["logits"]

    def bind_step(self, length: int) -> None:
        """Input ids and logits buffers for steps of `length` tokens, bound and refilled in place; the
        prompt's and the single step's are kept, so a reset and a new prompt of the same length reuse them."""
        if length not in self.steps:
            if len(self.steps) >= 2:
                self.steps.pop(next(key for key in self.steps if key != 1))
            self.steps[length] = (np.zeros((1, length), dtype=np.int64),
                                  np.empty((1, length, self.vocab()), dtype=self.decoder.logits_dtype))
        self.ids, self.logits = self.steps[length]
        self.last_logits = self.logits[0, -1]
        self.binding.bind_input("input_ids", "cpu", 0, np.int64, [1, length], self.ids.ctypes.data)
        self.binding.bind_output("logits", "cpu", 0, self.logits.dtype, list(self.logits.shape),
                                 self.logits.ctypes.data)

    def vocab(self) -> int:
        spec = next(item for item in self.decoder.session.get_outputs() if item.name == "logits")
        if isinstance(spec.shape[2], int):
            return spec.shape[2]
        raise Unsupported(f"the logits output's vocabulary axis is symbolic ({spec.shape}): cannot preallocate it")
