"""Edgeward: distill, export, quantize, validate on device, and price on-device inference.

Heavy libraries (torch, onnxruntime, litert) are imported inside the functions that
use them, so `import toolkit` and `edgeward --help` stay fast. Each stage is a function
in its package (`from toolkit.distill import distill`, `from toolkit.quantize import
quantize`, ...); the library logs (`logging`) and warns (`toolkit.errors.EdgewardWarning`),
it never prints.
"""

__version__ = "0.1.0"
