"""The builtin digits models: a small CNN and an MLP for scikit-learn's 8x8 digits.

They are trained deterministically (seed 0, one thread) on the fixed train split the
first time they are asked for, which takes seconds on 2 cores, and cached as
safetensors in the user's cache folder. Inputs are float32 [N,1,8,8] in [0,1].
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass

FAMILIES = ("digits-cnn", "digits-mlp")
INPUT_NAME = "x"


@dataclass(frozen=True)
class DigitsConfig:
    family: str = "digits-cnn"
    width: float = 1.0

    def channels(self) -> tuple[int, int, int]:
        """(conv1, conv2, hidden) for the CNN; (hidden1, hidden2, _) for the MLP."""
        scale = lambda base: max(2, int(round(base * self.width)))  # noqa: E731
        if self.family == "digits-cnn":
            return scale(16), scale(32), scale(64)
        return scale(128), scale(64), 0


def build(config: DigitsConfig):
    """An untrained module for the config."""
    import torch.nn as nn

    if config.family not in FAMILIES:
        from toolkit.errors import BadInput

        raise BadInput(f"unknown digits family {config.family!r}: use {', '.join(FAMILIES)}")
    first, second, hidden = config.channels()
    if config.family == "digits-cnn":
        return nn.Sequential(
            nn.Conv2d(1, first, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(first, second, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Flatten(),
            nn.Linear(second * 16, hidden),
            nn.ReLU(),
            nn.Linear(hidden, 10),
        )
    return nn.Sequential(
        nn.Flatten(),
        nn.Linear(64, first),
        nn.ReLU(),
        nn.Linear(first, second),
        nn.ReLU(),
        nn.Linear(second, 10),
    )


def train(model, x_train, y_train, *, epochs: int = 40, lr: float = 3e-3, batch_size: int = 64, seed: int = 0):
    """Plain supervised training with Adam; deterministic for a seed on CPU."""
    import torch

    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    x = torch.as_tensor(x_train)
    y = torch.as_tensor(y_train)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    for _ in range(epochs):
        order = torch.randperm(len(x), generator=generator)
        for start in range(0, len(x), batch_size):
            index = order[start : start + batch_size]
            optimizer.zero_grad()
            loss = torch.nn.functional.cross_entropy(model(x[index]), y[index])
            loss.backward()
            optimizer.step()
    return model.eval()


def accuracy(model, x, y) -> float:
    import torch

    with torch.no_grad():
        predicted = model(torch.as_tensor(x)).argmax(dim=1).numpy()
    return float((predicted == y).mean())


def load_builtin(name: str, *, retrain: bool = False):
    """The trained builtin model `name` (digits-cnn or digits-mlp), from cache or trained now."""
    import torch
    from safetensors.torch import load_file, save_file

    from toolkit.artifacts import atomic_write_text
    from toolkit.data import digits_split
    from toolkit.paths import cache_dir

    config = DigitsConfig(family=name)
    torch.manual_seed(0)  # the initial weights too: the same model on every machine
    model = build(config)
    weights = cache_dir() / f"builtin-{name}-v1.safetensors"
    if weights.is_file() and not retrain:
        try:
            model.load_state_dict(load_file(weights))
            return model.eval()
        except Exception:  # a damaged cache entry is rebuilt, never trusted
            weights.unlink(missing_ok=True)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # one thread: the same weights on every machine
    try:
        x_train, x_test, y_train, y_test = digits_split()
        train(model, x_train, y_train)
    finally:
        torch.set_num_threads(threads)
    tmp = weights.with_name(weights.name + ".tmp")
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(tmp))
    tmp.replace(weights)
    info = {"config": asdict(config), "test_accuracy": accuracy(model, x_test, y_test)}
    atomic_write_text(weights.with_suffix(".json"), json.dumps(info, indent=2))
    return model
