"""Knowledge distillation: train a small student to mimic a large teacher.

The loss is Hinton et al.'s: KL(teacher || student) of outputs softened by a temperature
T, times T^2 so its gradients keep their scale as T changes, weighted by `alpha`, plus
cross-entropy on the labels weighted by `1 - alpha`. Without labels it is pure
distillation. The teacher runs once over the data (its outputs are fixed), so a teacher
can be a torch module or an ONNX/TFLite file. Training is deterministic for a seed on
CPU: one generator orders the batches, the student starts from `torch.manual_seed(seed)`
and torch runs on a fixed number of threads. The best epoch on the validation data wins
(early stopping restores it). `baseline=True` trains the same student, from the same
start, on the labels alone with the same budget, to show what distillation bought.
"""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from toolkit.common.progress import ProgressCallback, ProgressEvent
from toolkit.common.text import first_line
from toolkit.data import Dataset, load_data
from toolkit.distill import hf_layers as hf
from toolkit.distill.students import Student, Teacher, load_teacher, make_student, parameter_count
from toolkit.errors import BadInput

VALIDATION_SHARE = 0.1  # held out of the training data when no validation data is given

logger = logging.getLogger(__name__)


@dataclass
class DistillResult:
    student: object  # the trained torch module (best epoch)
    teacher_accuracy: float | None  # on the validation data; None without labels
    student_accuracy: float | None
    agreement: float  # share of validation examples where student and teacher argmax agree
    teacher_parameters: int
    student_parameters: int
    history: list[dict]
    best_epoch: int
    baseline_accuracy: float | None = None
    baseline_agreement: float | None = None
    baseline_history: list[dict] = field(default_factory=list)
    baseline_student: object | None = None
    val_name: str = ""
    out_dir: Path | None = None
    manifest: dict = field(default_factory=dict)

    def summary(self) -> dict:
        return {
            "accuracy": {"teacher": self.teacher_accuracy, "student": self.student_accuracy,
                         "baseline": self.baseline_accuracy},
            "agreement": {"student": self.agreement, "baseline": self.baseline_agreement},
            "parameters": {"teacher": self.teacher_parameters, "student": self.student_parameters},
            "best_epoch": self.best_epoch,
            "val": self.val_name,
            "out_dir": str(self.out_dir) if self.out_dir else None,
        }


def distill(teacher, student, data, *, val=None, epochs: int = 30, lr: float = 3e-3, batch_size: int = 64,
            temperature: float = 4.0, alpha: float = 0.7, seed: int = 0, patience: int = 5,
            baseline: bool = False, out_dir=None, force: bool = False, threads: int = 1,
            progress: ProgressCallback | None = None) -> DistillResult:
    """Distill `teacher` into `student` on `data`; save an artifact folder if `out_dir` is given.

    teacher: a spec (builtin:NAME, HF folder, artifact folder, .onnx/.tflite, …) or a torch module.
    student: shrink:F | layers:N | builtin:NAME | package.module:factory, or a torch module.
    data/val: a Dataset or a data spec. Without `val`, builtin:digits:train validates on
    builtin:digits:test (the data the builtin teachers never saw); other data gives up 10%.
    progress: called after every epoch with a `ProgressEvent`; without it each epoch is logged (INFO).
    """
    import torch

    _check_hyper(epochs, lr, batch_size, temperature, alpha, patience)
    if out_dir is not None:
        from toolkit.artifacts import check_writable

        check_writable(out_dir, force)
    teacher_obj = load_teacher(teacher)
    train, val_data = _load_datasets(data, val, teacher_obj, seed)
    if baseline and train.labels is None:
        raise BadInput(f"--baseline needs labels, and {train.name} has none")
    if train.labels is None and alpha < 1:
        logger.info("the data has no labels: pure distillation (alpha = 1)")
        alpha = 1.0
    hyper = {"epochs": epochs, "lr": lr, "batch_size": batch_size, "temperature": temperature, "alpha": alpha,
             "seed": seed, "patience": patience, "threads": threads}

    previous_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        torch.manual_seed(seed)
        student_obj = make_student(student, teacher_obj)
        if out_dir is not None and student_obj.kind != "hf" and student_obj.record is None:
            raise BadInput("a student given as a module cannot be saved (nothing could rebuild it): pass a spec")
        initial_state = copy.deepcopy(student_obj.module.state_dict()) if baseline else None
        names = _input_names(teacher_obj, student_obj, train)
        _check_teacher_inputs(teacher_obj, train)
        _check_teacher_inputs(teacher_obj, val_data)
        train_t, val_t = _tensors(train, names), _tensors(val_data, names)
        teacher_train = _teacher_outputs(teacher_obj, train, names)
        teacher_val = _teacher_outputs(teacher_obj, val_data, names)
        _check_shapes(teacher_train, student_obj, train_t, names, train.labels)
        run = _Run(train_t, train.labels, teacher_train, val_t, val_data.labels, teacher_val, names, hyper)
        history, best = run.fit(student_obj.module, alpha, "distill", progress or _log_progress)
        result = _result(teacher_obj, student_obj, run, history, best, val_data)
        if baseline:
            torch.manual_seed(seed)
            base = make_student(student, teacher_obj)
            base.module.load_state_dict(initial_state)
            base_history, _ = run.fit(base.module, 0.0, "baseline", progress or _log_progress)
            result.baseline_accuracy, result.baseline_agreement = run.evaluate(base.module)[:2]
            result.baseline_history, result.baseline_student = base_history, base.module
    finally:
        torch.set_num_threads(previous_threads)
    if out_dir is not None:
        result.out_dir, result.manifest = _save(result, teacher_obj, student_obj, train, val_data, hyper,
                                                out_dir, force)
    return result


def _check_hyper(epochs, lr, batch_size, temperature, alpha, patience) -> None:
    if not temperature > 0:
        raise BadInput(f"temperature must be > 0 (got {temperature}); 2-8 is usual")
    if not 0 <= alpha <= 1:
        raise BadInput(f"alpha must be in [0, 1] (got {alpha}): the weight of the distillation loss")
    if epochs < 1 or batch_size < 1 or patience < 1:
        raise BadInput(f"epochs, batch size and patience must be >= 1 (got {epochs}, {batch_size}, {patience})")
    if not lr > 0:
        raise BadInput(f"the learning rate must be > 0 (got {lr})")


def _load_datasets(data, val, teacher: Teacher, seed: int) -> tuple[Dataset, Dataset]:
    names = teacher.input_names or None
    train = data if isinstance(data, Dataset) else load_data(data, names)
    _check_examples(train)
    if val is None and not isinstance(data, Dataset) and str(data).startswith("builtin:digits:train"):
        val = "builtin:digits:test"
    if val is None:
        order = np.random.default_rng(seed).permutation(len(train))
        held = max(1, int(round(len(train) * VALIDATION_SHARE)))
        if len(train) - held < 1:
            raise BadInput(f"{train.name}: {len(train)} example(s) are too few to hold out validation data; pass --val")
        train, val_data = _subset(train, order[held:], "train"), _subset(train, order[:held], "held-out 10%")
    else:
        val_data = val if isinstance(val, Dataset) else load_data(val, names)
        _check_examples(val_data)
    if names:
        train, val_data = train.renamed(names), val_data.renamed(names)
    return train, val_data


def _check_examples(dataset: Dataset) -> None:
    if not dataset.inputs or len(dataset) == 0:
        raise BadInput(f"data {dataset.name or '<dataset>'} has no examples")


def _subset(dataset: Dataset, index: np.ndarray, part: str) -> Dataset:
    labels = None if dataset.labels is None else dataset.labels[index]
    return Dataset({k: v[index] for k, v in dataset.inputs.items()}, labels, f"{dataset.name} ({part})",
                   dataset.meta)


def _input_names(teacher: Teacher, student: Student, data: Dataset) -> list[str]:
    if student.kind == "hf" or hf.is_hf_model(student.module):
        wanted = hf.forward_names(student.module)
        names = [name for name in wanted if name in data.inputs]
        if "input_ids" not in names:
            raise BadInput(f"data {data.name} has {sorted(data.inputs)}; a text model needs input_ids (and attention_mask)")
        return names
    names = [name for name in (teacher.input_names or list(data.inputs)) if name in data.inputs]
    if not names:
        raise BadInput(f"data {data.name} has inputs {sorted(data.inputs)}, the teacher wants {teacher.input_names}")
    return names


def _check_teacher_inputs(teacher: Teacher, dataset: Dataset) -> None:
    """Data that does not fit a teacher whose input shapes are known (an image folder in NHWC for an
    NCHW model, grayscale for RGB) is named as such, before the teacher fails on it."""
    from toolkit.common.tensors import TensorSpec
    from toolkit.data import check_matches

    if teacher.kind == "runtime":
        specs = teacher.runner.inputs
    elif teacher.kind == "digits":
        specs = [TensorSpec(teacher.input_names[0], [None, 1, 8, 8], "float32")]
    else:
        return
    check_matches(dataset, specs)


def _tensors(dataset: Dataset, names: list[str]) -> dict:
    import torch

    tensors = {}
    for name in names:
        array = dataset.inputs[name]
        if array.dtype.kind in "iub":
            tensors[name] = torch.as_tensor(array.astype(np.int64))
        else:
            tensors[name] = torch.as_tensor(array.astype(np.float32))
    return tensors


def forward(module, batch: dict, names: list[str]):
    """Logits of a torch module for a batch (HF models by keyword, others positionally)."""
    output = module(**batch) if hf.is_hf_model(module) else module(*(batch[name] for name in names))
    if hasattr(output, "logits"):
        return output.logits
    if isinstance(output, dict):
        return output.get("logits", next(iter(output.values())))
    if isinstance(output, list | tuple):
        return output[0]
    return output


def _teacher_outputs(teacher: Teacher, dataset: Dataset, names: list[str]):
    """The teacher's logits on the whole dataset, computed once."""
    import torch

    if teacher.kind == "runtime":
        from toolkit.runtime import run_batched

        feeds = {spec.name: dataset.inputs[spec.name].astype(spec.dtype, copy=False) if spec.dtype else
                 dataset.inputs[spec.name] for spec in teacher.runner.inputs if spec.name in dataset.inputs}
        if len(feeds) != len(teacher.runner.inputs):
            raise BadInput(f"data {dataset.name} has {sorted(dataset.inputs)}; the teacher wants "
                           f"{[spec.name for spec in teacher.runner.inputs]}")
        return torch.as_tensor(np.asarray(run_batched(teacher.runner, feeds)[0], dtype=np.float32))
    tensors = _tensors(dataset, names)
    chunks = []
    with torch.no_grad():
        for start in range(0, len(dataset), 256):
            batch = {name: tensor[start : start + 256] for name, tensor in tensors.items()}
            try:
                chunks.append(forward(teacher.module, batch, names).float())
            except (RuntimeError, TypeError, ValueError, IndexError) as error:
                raise BadInput(f"the teacher cannot run on {dataset.name}: {first_line(error)}") from None
    return torch.cat(chunks)


def _check_shapes(teacher_logits, student: Student, tensors: dict, names: list[str], labels) -> None:
    import torch

    probe = {name: tensor[:2] for name, tensor in tensors.items()}
    try:
        with torch.no_grad():
            student.module.eval()
            student_logits = forward(student.module, probe, names)
    except (RuntimeError, TypeError, ValueError, IndexError) as error:
        raise BadInput(f"student {student.spec} cannot take the teacher's inputs: {first_line(error)}") from None
    if tuple(student_logits.shape[1:]) != tuple(teacher_logits.shape[1:]):
        raise BadInput(
            f"teacher and student outputs differ: teacher {list(teacher_logits.shape[1:])} per example, "
            f"student {student.spec} {list(student_logits.shape[1:])}"
        )
    if teacher_logits.ndim != 2:
        raise BadInput(f"distillation needs class logits [N, C]; the teacher gives {list(teacher_logits.shape)}")
    if labels is not None and (labels.min() < 0 or labels.max() >= teacher_logits.shape[1]):
        raise BadInput(f"labels run {labels.min()}..{labels.max()} but the models have {teacher_logits.shape[1]} classes")


class _Run:
    """The fixed parts of a training run: data, teacher outputs and hyper-parameters."""

    def __init__(self, train, labels, teacher_train, val, val_labels, teacher_val, names, hyper):
        import torch

        self.train, self.teacher_train, self.val, self.teacher_val = train, teacher_train, val, teacher_val
        self.labels = None if labels is None else torch.as_tensor(labels.astype(np.int64))
        self.val_labels = None if val_labels is None else np.asarray(val_labels)
        self.names, self.hyper = names, hyper
        self.count = len(teacher_train)

    def loss(self, student_logits, teacher_logits, labels, alpha):
        import torch.nn.functional as F

        temperature = self.hyper["temperature"]
        total = 0.0
        if alpha > 0:
            soft = F.kl_div(F.log_softmax(student_logits / temperature, dim=1),
                            F.log_softmax(teacher_logits / temperature, dim=1),
                            reduction="batchmean", log_target=True)
            total = alpha * soft * temperature**2
        if alpha < 1 and labels is not None:
            total = total + (1 - alpha) * F.cross_entropy(student_logits, labels)
        return total

    def evaluate(self, module) -> tuple[float | None, float, float]:
        """(accuracy on val labels or None, argmax agreement with the teacher, val loss).

        The val loss (the tie-breaker between epochs of equal accuracy) is cross-entropy on
        the labels where there are labels, so a label-only baseline never sees the teacher.
        """
        import torch
        import torch.nn.functional as F

        module.eval()
        with torch.no_grad():
            logits = torch.cat([forward(module, {n: t[s : s + 256] for n, t in self.val.items()}, self.names)
                                for s in range(0, len(self.teacher_val), 256)]).float()
            if self.val_labels is None:
                val_loss = float(self.loss(logits, self.teacher_val, None, 1.0))
            else:
                val_loss = float(F.cross_entropy(logits, torch.as_tensor(self.val_labels.astype(np.int64))))
        predicted = logits.argmax(dim=1).numpy()
        agreement = float((predicted == self.teacher_val.argmax(dim=1).numpy()).mean())
        accuracy = None if self.val_labels is None else float((predicted == self.val_labels).mean())
        return accuracy, agreement, val_loss

    def fit(self, module, alpha: float, label: str, progress: ProgressCallback) -> tuple[list[dict], int]:
        """Train in place; restore the best epoch on validation. Returns (history, best epoch)."""
        import torch

        hyper = self.hyper
        generator = torch.Generator().manual_seed(hyper["seed"])
        optimizer = torch.optim.Adam(module.parameters(), lr=hyper["lr"])
        history, best_key, best_state, best_epoch, stale = [], None, None, 0, 0
        for epoch in range(1, hyper["epochs"] + 1):
            module.train()
            order = torch.randperm(self.count, generator=generator)
            losses = []
            for start in range(0, self.count, hyper["batch_size"]):
                index = order[start : start + hyper["batch_size"]]
                batch = {name: tensor[index] for name, tensor in self.train.items()}
                labels = None if self.labels is None else self.labels[index]
                optimizer.zero_grad()
                loss = self.loss(forward(module, batch, self.names), self.teacher_train[index], labels, alpha)
                loss.backward()
                optimizer.step()
                losses.append(float(loss.detach()))
            accuracy, agreement, val_loss = self.evaluate(module)
            row = {"epoch": epoch, "loss": round(float(np.mean(losses)), 6), "val_accuracy": accuracy,
                   "val_agreement": agreement, "val_loss": round(val_loss, 6)}
            history.append(row)
            key = (accuracy if accuracy is not None else agreement, -val_loss)
            if best_key is None or key > best_key:
                best_key, best_state, best_epoch, stale = key, copy.deepcopy(module.state_dict()), epoch, 0
            else:
                stale += 1
            progress(ProgressEvent(label, epoch, hyper["epochs"], "epoch", _epoch_status(row)))
            if stale >= hyper["patience"]:
                break
        module.load_state_dict(best_state)
        module.eval()
        return history, best_epoch


def _epoch_status(row: dict) -> str:
    metric = row["val_accuracy"] if row["val_accuracy"] is not None else row["val_agreement"]
    name = "val acc" if row["val_accuracy"] is not None else "val agreement"
    return f"loss {row['loss']:.4f}  {name} {metric:.2%}"


def _log_progress(event: ProgressEvent) -> None:
    logger.info("%s", event)


def _result(teacher: Teacher, student: Student, run: _Run, history, best, val_data: Dataset) -> DistillResult:
    accuracy, agreement, _ = run.evaluate(student.module)
    teacher_accuracy = None
    if run.val_labels is not None:
        teacher_accuracy = float((run.teacher_val.argmax(dim=1).numpy() == run.val_labels).mean())
    teacher_parameters = parameter_count(teacher.module) if teacher.module is not None else _runtime_parameters(teacher)
    return DistillResult(student.module, teacher_accuracy, accuracy, agreement, teacher_parameters,
                         parameter_count(student.module), history, best, val_name=val_data.name)


def _runtime_parameters(teacher: Teacher) -> int:
    """Weights in an ONNX teacher (initializers); 0 where they cannot be counted."""
    path = getattr(teacher.runner, "path", None)
    if path is None or Path(path).suffix != ".onnx":
        return 0
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    return int(sum(int(np.prod(init.dims)) for init in model.graph.initializer))


def _data_record(train: Dataset, val: Dataset) -> dict:
    record = {"train": train.name, "val": val.name, "train_examples": len(train), "val_examples": len(val)}
    if train.meta.get("classes"):  # folder or text labels: class i is the i-th name
        record["classes"] = train.meta["classes"]
    return record


def _save(result: DistillResult, teacher: Teacher, student: Student, train: Dataset, val: Dataset, hyper: dict,
          out_dir, force: bool) -> tuple[Path, dict]:
    from toolkit.artifacts import new_manifest, source_record, staged_folder, write_manifest

    libraries = ["torch", "safetensors"] + (["transformers"] if student.kind == "hf" else [])
    inputs = [{"name": name, "shape": [None, *array.shape[1:]], "dtype": str(array.dtype)}
              for name, array in train.inputs.items() if name in (teacher.input_names or train.inputs)]
    with staged_folder(out_dir, force) as stage:
        extra = {}
        if student.kind == "hf":
            extra["tokenizer_files"] = hf.save_student(student.module, stage, teacher.folder)
            extra["student_layers_from_teacher"] = student.notes.get("teacher_layers")
        else:
            from safetensors.torch import save_file

            state = {key: value.detach().contiguous() for key, value in student.module.state_dict().items()}
            save_file(state, str(stage / "model.safetensors"))
            extra["rebuild"] = student.record
        summary = result.summary()
        manifest = new_manifest(
            "distill", stage,
            source=source_record(teacher.spec),
            options=hyper,
            libraries=libraries,
            model_file="model.safetensors",
            teacher=teacher.spec,
            student_spec=student.spec,
            hyper=hyper,
            data=_data_record(train, val),
            inputs=inputs,
            accuracy=summary["accuracy"],
            agreement=summary["agreement"],
            parameters=summary["parameters"],
            best_epoch=result.best_epoch,
            history=result.history,
            baseline_history=result.baseline_history or None,
            **extra,
        )
        write_manifest(stage, manifest)
    return Path(out_dir), manifest
