"""Distill a decoder-only language model into a `layers:N` student on a text file.

    from toolkit.lm.distill import distill_lm
    result = distill_lm("qwen2-folder", "layers:1", "text.txt", steps=200, out_dir="exported/qwen2-1l")

The student is the teacher's config with N layers, DistilBERT-style: its layer i starts from
teacher layer i*k (k = teacher layers // N) and the embeddings, final norm and LM head are copied
(toolkit.distill.hf_layers). A Hugging Face causal-LM folder can be the student instead, if its
vocabulary is the teacher's. Training reads the text (plain lines, or JSONL records with `text`,
as validate_lm reads it) tokenized with the teacher's tokenizer, as one stream cut into windows.
The loss at every position is Hinton's: alpha * T^2 * KL(teacher || student) of the next-token
distributions softened by the temperature T, plus (1 - alpha) * the next-token cross-entropy.
The label-only baseline (next-token cross-entropy alone) starts from the same weights and sees
the same batches for the same number of steps, so the perplexities on the held-out text say
what the teacher's logits bought.
"""

from __future__ import annotations

import copy
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

from toolkit.common.progress import ProgressCallback, ProgressEvent
from toolkit.errors import BadInput

logger = logging.getLogger(__name__)

DEFAULT_WINDOW = 128  # tokens a training window holds when the context is longer
HELD_OUT_SHARE = 0.1  # of the windows, kept out of training when no validation text is given
LIBRARIES = ("torch", "transformers", "tokenizers", "safetensors")


@dataclass
class LmDistillResult:
    out_dir: Path | None
    teacher: str
    student_spec: str
    teacher_layers: int
    student_layers: int
    layers_from_teacher: list[int] | None  # the teacher layer each student layer started from
    teacher_parameters: int
    student_parameters: int
    steps: int
    window: int
    train_tokens: int
    heldout_tokens: int  # next tokens scored for the perplexities
    heldout: str  # where the held-out text came from
    teacher_perplexity: float
    student_perplexity: float
    baseline_perplexity: float | None  # the label-only student's, None when not trained
    loss_history: list[dict] = field(default_factory=list)
    seconds: float = 0.0
    manifest: dict = field(default_factory=dict)

    def summary(self) -> dict:
        return {"kind": "language-model", "out_dir": str(self.out_dir) if self.out_dir else None,
                "teacher": self.teacher, "student": self.student_spec,
                "layers": {"teacher": self.teacher_layers, "student": self.student_layers,
                           "from_teacher": self.layers_from_teacher},
                "parameters": {"teacher": self.teacher_parameters, "student": self.student_parameters},
                "perplexity": {"teacher": _round(self.teacher_perplexity), "student": _round(self.student_perplexity),
                               "baseline": _round(self.baseline_perplexity)},
                "steps": self.steps, "window": self.window, "train_tokens": self.train_tokens,
                "heldout_tokens": self.heldout_tokens, "heldout": self.heldout, "seconds": round(self.seconds, 2)}

    def human(self) -> str:
        share = self.student_parameters / self.teacher_parameters
        lines = [f"{self.out_dir or 'student'}: {self.student_layers} of {self.teacher_layers} layers, "
                 f"{self.student_parameters:,} parameters ({share:.1%} of the teacher's), {self.steps} steps",
                 f"perplexity on {self.heldout} ({self.heldout_tokens} tokens): teacher {self.teacher_perplexity:.3f}, "
                 f"distilled student {self.student_perplexity:.3f}"]
        if self.baseline_perplexity is not None:
            lines.append(f"label-only baseline (same start, same steps): {self.baseline_perplexity:.3f}")
        return "\n".join(lines)


def _round(value: float | None) -> float | None:
    return None if value is None or not math.isfinite(value) else float(f"{value:.6g}")


def distill_lm(teacher, student, data, *, val=None, steps: int | None = None, epochs: int = 3, lr: float = 3e-3,
               batch_size: int = 8, temperature: float = 2.0, alpha: float = 0.5, seed: int = 0,
               max_length: int | None = None, baseline: bool = True, out_dir=None, force: bool = False,
               threads: int = 1, trust_remote_code: bool = False,
               progress: ProgressCallback | None = None) -> LmDistillResult:
    """Train a student of the causal-LM folder `teacher` on the text file `data` (see the module doc).

    student: layers:N, or a Hugging Face causal-LM folder with the teacher's vocabulary.
    steps: optimizer steps; without it, `epochs` passes over the training windows.
    val: a text file for the perplexities; without it the last 10% of the windows are held out.
    """
    import torch

    from toolkit.lm.folder import is_causal_lm, require_tokenizer
    from toolkit.lm.model import load_tokenizer
    from toolkit.lm.validate import read_texts

    _check_hyper(steps, epochs, lr, batch_size, temperature, alpha, max_length)
    started = time.perf_counter()
    teacher_folder = Path(teacher)
    if not is_causal_lm(teacher_folder):
        raise BadInput(f"{teacher}: not a Hugging Face causal-LM folder (config.json with a ...ForCausalLM)")
    require_tokenizer(teacher_folder)
    if out_dir is not None:
        from toolkit.artifacts import check_writable

        check_writable(out_dir, force)
    texts = read_texts(data)
    val_texts = read_texts(val) if val is not None else None
    tokenizer = load_tokenizer(teacher_folder)

    previous_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        teacher_model = _load_causal_lm(teacher_folder, trust_remote_code)
        torch.manual_seed(seed)
        student_model, chosen = _make_student(student, teacher_model, teacher_folder, tokenizer, trust_remote_code)
        window = _window(max_length, teacher_model.config)
        train, heldout, heldout_name = _split(tokenizer, texts, val_texts, window, data, val)
        total_steps = steps if steps is not None else epochs * math.ceil(len(train) / batch_size)
        batches = _batch_order(len(train), batch_size, total_steps, seed)
        initial = copy.deepcopy(student_model.state_dict()) if baseline else None
        history = _train(student_model, teacher_model, train, batches, lr, temperature, alpha, "distill", progress)
        base_ppl = None
        if baseline:
            base_model = copy.deepcopy(student_model)
            base_model.load_state_dict(initial)
            _train(base_model, None, train, batches, lr, temperature, 0.0, "baseline", progress)
            base_ppl = perplexity(base_model, heldout)
        result = LmDistillResult(
            out_dir=None, teacher=str(teacher), student_spec=str(student),
            teacher_layers=teacher_model.config.num_hidden_layers,
            student_layers=student_model.config.num_hidden_layers,
            layers_from_teacher=chosen, teacher_parameters=_parameters(teacher_model),
            student_parameters=_parameters(student_model), steps=total_steps, window=window,
            train_tokens=int(train.numel()), heldout_tokens=int(sum(len(w) - 1 for w in heldout)),
            heldout=heldout_name, teacher_perplexity=perplexity(teacher_model, heldout),
            student_perplexity=perplexity(student_model, heldout), baseline_perplexity=base_ppl,
            loss_history=history)
    finally:
        torch.set_num_threads(previous_threads)
    result.seconds = time.perf_counter() - started
    if out_dir is not None:
        result.out_dir, result.manifest = _save(result, student_model, teacher_folder, out_dir, force, dict(
            steps=total_steps, lr=lr, batch_size=batch_size, temperature=temperature, alpha=alpha, seed=seed,
            window=window, threads=threads, baseline=baseline), data, val)
    return result


def _check_hyper(steps, epochs, lr, batch_size, temperature, alpha, max_length) -> None:
    if not temperature > 0:
        raise BadInput(f"temperature must be > 0 (got {temperature}); 1-4 is usual for language models")
    if not 0 <= alpha <= 1:
        raise BadInput(f"alpha must be in [0, 1] (got {alpha}): the weight of the distillation loss")
    if (steps is not None and steps < 1) or epochs < 1 or batch_size < 1:
        raise BadInput(f"steps, epochs and batch size must be >= 1 (got {steps}, {epochs}, {batch_size})")
    if not lr > 0:
        raise BadInput(f"the learning rate must be > 0 (got {lr})")
    if max_length is not None and max_length < 2:
        raise BadInput(f"--max-length {max_length}: a window needs at least 2 tokens")


def _load_causal_lm(folder: Path, trust_remote_code: bool):
    from toolkit.sources.hf import check_folder, load_model

    config = check_folder(folder, trust_remote_code=trust_remote_code)
    return load_model(folder, config, trust_remote_code=trust_remote_code)


def _make_student(spec, teacher, teacher_folder: Path, tokenizer, trust_remote_code: bool):
    """(student model, the teacher layer each student layer came from, or None for a folder student)."""
    from toolkit.distill.hf_layers import layer_student
    from toolkit.lm.folder import has_tokenizer, is_causal_lm

    text = str(spec)
    if text.startswith("layers:"):
        try:
            layers = int(text.removeprefix("layers:"))
        except ValueError:
            raise BadInput(f"{text}: give layers:N with N a whole number of layers") from None
        student = layer_student(teacher, layers)
        chosen = list(student.edgeward_layers)
        layer_types = getattr(teacher.config, "layer_types", None)  # per-layer attention kinds (Qwen2, Gemma)
        if isinstance(layer_types, list) and len(layer_types) == teacher.config.num_hidden_layers:
            student.config.layer_types = [layer_types[index] for index in chosen]
        return student.train(), chosen
    folder = Path(text)
    if not is_causal_lm(folder):
        raise BadInput(f"unknown language-model student {text!r}: use layers:N or a Hugging Face causal-LM folder")
    if has_tokenizer(folder):
        from toolkit.lm.model import load_tokenizer

        if load_tokenizer(folder).get_vocab() != tokenizer.get_vocab():
            raise BadInput(f"the student {folder}'s tokenizer differs from the teacher's: a student learns the "
                           "teacher's next-token distributions, so it needs the same vocabulary")
    student = _load_causal_lm(folder, trust_remote_code)
    if student.get_output_embeddings().weight.shape[0] != teacher.get_output_embeddings().weight.shape[0]:
        raise BadInput(f"the student {folder} predicts {student.config.vocab_size} tokens and the teacher "
                       f"{teacher.config.vocab_size}: a student needs the teacher's vocabulary")
    return student.train(), None


def _window(max_length: int | None, config) -> int:
    from toolkit.lm.folder import context_length

    context = context_length(config.to_dict())
    if max_length is not None:
        if context is not None and max_length > context:
            raise BadInput(f"--max-length {max_length} is longer than the teacher's context of {context} tokens")
        return max_length
    return min(context or DEFAULT_WINDOW, DEFAULT_WINDOW)


def _windows(tokenizer, texts: list[str], window: int):
    """The records' tokens as one stream cut into windows of `window` tokens (a short tail is dropped
    when there are full windows, so every batch is a rectangle)."""
    import torch

    stream = [token for text in texts for token in tokenizer(text, add_special_tokens=True)["input_ids"]]
    if len(stream) < 2:
        return torch.zeros((0, 2), dtype=torch.int64)
    if len(stream) < window:
        return torch.tensor([stream], dtype=torch.int64)
    count = len(stream) // window
    return torch.tensor(stream[:count * window], dtype=torch.int64).reshape(count, window)


def _split(tokenizer, texts, val_texts, window: int, data, val):
    """(training windows, held-out windows, their name)."""
    train = _windows(tokenizer, texts, window)
    if val_texts is not None:
        heldout = _windows(tokenizer, val_texts, window)
        if len(heldout) == 0:
            raise BadInput(f"{val} tokenizes to fewer than 2 tokens: nothing to score")
        name = str(val)
    else:
        if len(train) < 2:
            raise BadInput(f"{data} gives {len(train)} window(s) of {window} tokens: too little to hold some out; "
                           "give more text, a shorter --max-length or a --val text")
        kept = max(1, round(len(train) * HELD_OUT_SHARE))
        train, heldout = train[:-kept], train[-kept:]
        name = f"the last {kept} window(s) of {data}"
    if len(train) == 0:
        raise BadInput(f"{data} tokenizes to fewer than 2 tokens: nothing to train on")
    return train, heldout, name


def _batch_order(count: int, batch_size: int, steps: int, seed: int) -> list:
    """The window indices of every step: shuffled passes over the windows, one generator for both students."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    order: list = []
    while len(order) < steps:
        permutation = torch.randperm(count, generator=generator)
        order += [permutation[start:start + batch_size] for start in range(0, count, batch_size)]
    return order[:steps]


def _train(student, teacher, windows, batches, lr: float, temperature: float, alpha: float, label: str,
           progress: ProgressCallback | None) -> list[dict]:
    """Adam over `batches`; alpha 0 (or no teacher) is the label-only next-token loss."""
    import torch
    import torch.nn.functional as F

    optimizer = torch.optim.Adam(student.parameters(), lr=lr)
    student.train()
    history = []
    report_every = max(1, len(batches) // 10)
    for step, index in enumerate(batches, start=1):
        ids = windows[index]
        logits = student(input_ids=ids, use_cache=False).logits[:, :-1]
        vocab = logits.shape[-1]
        targets = ids[:, 1:]
        loss = F.cross_entropy(logits.reshape(-1, vocab), targets.reshape(-1))
        if teacher is not None and alpha > 0:
            with torch.no_grad():
                teacher_logits = teacher(input_ids=ids, use_cache=False).logits[:, :-1]
            soft = F.kl_div(F.log_softmax(logits / temperature, -1).reshape(-1, vocab),
                            F.log_softmax(teacher_logits / temperature, -1).reshape(-1, vocab),
                            log_target=True, reduction="batchmean") * temperature ** 2
            loss = alpha * soft + (1 - alpha) * loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if step % report_every == 0 or step == len(batches):
            history.append({"step": step, "loss": round(loss.item(), 5)})
            event = ProgressEvent(task=label, completed=step, total=len(batches), status=f"loss {loss.item():.4f}")
            if progress is not None:
                progress(event)
            else:
                logger.info("%s", event)
    student.eval()
    return history


def perplexity(model, windows) -> float:
    """exp of the mean next-token negative log-likelihood over every window."""
    import torch
    import torch.nn.functional as F

    model.eval()
    total, count = 0.0, 0
    with torch.no_grad():
        for ids in windows:
            ids = ids.reshape(1, -1)
            logits = model(input_ids=ids, use_cache=False).logits[0, :-1].double()
            total += float(F.cross_entropy(logits, ids[0, 1:], reduction="sum"))
            count += ids.shape[1] - 1
    return math.exp(total / count)


def _parameters(model) -> int:
    return int(sum(parameter.numel() for parameter in model.parameters()))


def _save(result: LmDistillResult, student, teacher_folder: Path, out_dir, force: bool, hyper: dict, data,
          val) -> tuple[Path, dict]:
    """The student as a Hugging Face folder (config, safetensors, the teacher's tokenizer) with a manifest."""
    from toolkit.artifacts import new_manifest, source_record, staged_folder, write_manifest
    from toolkit.lm.folder import copy_side_files

    with staged_folder(out_dir, force) as stage:
        student.save_pretrained(str(stage), safe_serialization=True)
        copied = copy_side_files(teacher_folder, stage)
        summary = result.summary()
        manifest = new_manifest(
            "distill", stage, source=source_record(str(teacher_folder)), options=hyper, libraries=LIBRARIES,
            model_file="model.safetensors", kind="language-model", teacher=str(teacher_folder),
            student_spec=result.student_spec, hyper=hyper, data={"train": str(data), "heldout": result.heldout,
                                                                 "train_tokens": result.train_tokens,
                                                                 "heldout_tokens": result.heldout_tokens},
            layers=summary["layers"], parameters=summary["parameters"], perplexity=summary["perplexity"],
            history=result.loss_history, tokenizer_files=copied, val=str(val) if val is not None else None)
        write_manifest(stage, manifest)
    return Path(out_dir), manifest
