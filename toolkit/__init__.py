"""Edgeward: distill, export, quantize, validate on device, and price on-device inference.

Heavy libraries (torch, onnxruntime, litert) are imported inside the functions that
use them, so `import toolkit` and `edgeward --help` stay fast.
"""

__version__ = "0.1.0"


def distill(*args, **kwargs):
    """Knowledge distillation, teacher to student: see `toolkit.distill.distill`."""
    from toolkit.distill import distill as _distill

    return _distill(*args, **kwargs)
