"""Small models several test files build the same way."""

from pathlib import Path


def write_cumsum_tflite(path: Path) -> Path:
    """A float TFLite model with one op XNNPACK lacks (CUMSUM) after one it takes (FULLY_CONNECTED)."""
    import litert_torch
    import torch

    class LinearThenCumsum(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.linear = torch.nn.Linear(64, 64)

        def forward(self, x):
            return torch.cumsum(self.linear(x), dim=-1)

    torch.manual_seed(0)
    litert_torch.convert(LinearThenCumsum().eval(), (torch.zeros(1, 64),)).export(str(path))
    return path
