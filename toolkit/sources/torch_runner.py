"""Run a torch module behind the same interface as `toolkit.runtime.OnnxRunner`.

The reference side of every comparison (export error, validation) is the source model
as PyTorch runs it; this runner makes it look like any other runtime.
"""

from __future__ import annotations

import numpy as np

from toolkit.common.tensors import TensorSpec
from toolkit.errors import BadInput


class TorchRunner:
    format = "torch"
    provider = "torch-cpu"

    def __init__(self, module, inputs: list[TensorSpec], outputs: list[TensorSpec] | None = None,
                 example=None, threads: int | None = None, output_names: list[str] | None = None):
        import torch

        if threads:
            torch.set_num_threads(threads)
        self.module = module
        self.inputs = list(inputs)
        if outputs is None and example is not None:
            results = self.run(example() if callable(example) else example)
            names = list(output_names or [])
            if len(names) != len(results):
                names = [f"output_{i}" for i in range(len(results))]
            outputs = [
                TensorSpec(name, ["batch", *r.shape[1:]] if r.ndim else [], r.dtype.name)
                for name, r in zip(names, results, strict=True)
            ]
        self.outputs = list(outputs or [])

    def run(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        import torch

        args = []
        for spec in self.inputs:
            if spec.name in feeds:
                array = np.asarray(feeds[spec.name])
            elif len(feeds) == 1 and len(self.inputs) == 1:
                array = np.asarray(next(iter(feeds.values())))
            else:
                raise BadInput(f"no data for the input {spec.name!r} (have {sorted(feeds)})")
            if spec.dtype:
                array = array.astype(spec.dtype, copy=False)
            args.append(torch.from_numpy(np.ascontiguousarray(array)))
        try:
            with torch.no_grad():
                result = self.module(*args)
        except Exception as error:
            text = str(error).strip().splitlines()
            raise BadInput(f"the torch model failed on these inputs: {(text[0] if text else type(error).__name__)[:300]}") from None
        return [tensor.detach().cpu().numpy() for tensor in flatten_outputs(result)]


def flatten_outputs(result) -> list:
    """Tensors out of whatever a module returns: a tensor, a tuple/list, a dict or a ModelOutput."""
    import torch

    if isinstance(result, torch.Tensor):
        return [result]
    if isinstance(result, dict):
        result = list(result.values())
    if isinstance(result, list | tuple):
        flat = []
        for item in result:
            flat.extend(flatten_outputs(item))
        return flat
    if result is None:
        return []
    raise BadInput(f"the model returned a {type(result).__name__}; tensors were expected")
