"""Does this CPU make int8 faster than float? Checked before int8 is recommended for a device.

int8 pays off on a CPU when it multiplies 8-bit values four (or eight) at a time into 32-bit
sums: x86 VNNI (AVX-512 VNNI, AVX-VNNI) or AMX, ARM's dot product (`asimddp`, Armv8.2) or
int8 matrix multiply (`i8mm`, Armv8.6). Without them the kernels widen to 16 bits first
(x86 VPMADDUBSW, which also saturates; ARM SMULL/SMLAL), and an int8 model may gain little
over float, or be slower once the run-time quantization of activations is paid.
The facts come from the device profile (`cpu_int8_instructions`) or, for this host, from
/proc/cpuinfo.
"""

from __future__ import annotations

import platform
import warnings
from dataclasses import asdict, dataclass

from toolkit.common.cpu import VNNI_FLAGS, host_cpu_flags
from toolkit.errors import EdgewardWarning

ARM_INT8_FLAGS = {"asimddp", "i8mm"}
INT8_FLAGS = VNNI_FLAGS | ARM_INT8_FLAGS
# modes whose kernels compute in int8 (weight-only and fp16 modes compute in float)
INT8_COMPUTE_MODES = {"dynamic-int8", "static-int8", "dynamic-int8-int4emb"}


@dataclass
class Int8Hardware:
    where: str  # "this host" or "device NAME"
    instructions: list[str] | None  # the int8 dot-product extensions it has; None when not known
    fast_int8: bool | None  # None: not known
    note: str

    def as_dict(self) -> dict:
        return asdict(self)


def host_int8_hardware() -> Int8Hardware:
    flags = host_cpu_flags()
    machine = platform.machine().lower()
    if not flags:
        return Int8Hardware("this host", None, None, f"{machine}: the CPU flags cannot be read here")
    found = sorted(flags & INT8_FLAGS)
    if found:
        return Int8Hardware("this host", found, True, f"{machine} with {', '.join(found)}: int8 dot products")
    widening = "AVX2 VPMADDUBSW (16-bit, saturating)" if "avx2" in flags else "16-bit multiply-adds"
    return Int8Hardware("this host", [], False, f"{machine} without int8 dot-product instructions "
                        f"(no VNNI/AMX/asimddp/i8mm): int8 kernels use {widening}")


def device_int8_hardware(device: str) -> Int8Hardware:
    """From the profile's `cpu_int8_instructions`; a local profile without it is this host."""
    from toolkit.devices.profiles import get_profile

    profile = get_profile(device)
    stated = profile.value("cpu_int8_instructions")
    where = f"device {device}"
    if stated is None:
        if profile.transport.get("type") == "local":
            host = host_int8_hardware()
            host.where = f"{where} (this host)"
            return host
        return Int8Hardware(where, None, None, "the profile does not state cpu_int8_instructions")
    found = sorted(set(stated) & INT8_FLAGS)
    if found:
        return Int8Hardware(where, found, True, f"{', '.join(found)}: int8 dot products")
    return Int8Hardware(where, [], False, "no int8 dot-product instructions (asimddp/i8mm/VNNI) in the profile")


def int8_hardware(device: str | None = None) -> Int8Hardware:
    return device_int8_hardware(device) if device else host_int8_hardware()


def check_int8_speed(mode: str, device: str | None = None, *, measured_speedup: float | None = None,
                     stacklevel: int = 2) -> dict:
    """The facts for MODE on DEVICE (or this host), with a warning when int8 may be slower than float there.

    `measured_speedup`: float p50 / quantized p50 measured where the model will run (this host);
    a measured gain above 1 settles the question, so no warning then.
    """
    facts = int8_hardware(device)
    record = {**facts.as_dict(), "int8_compute": mode in INT8_COMPUTE_MODES, "may_be_slower_than_float": False,
              "measured_speedup": None if measured_speedup is None else round(measured_speedup, 3)}
    if mode in INT8_COMPUTE_MODES and measured_speedup is not None:
        record["may_be_slower_than_float"] = measured_speedup <= 1.0
        if measured_speedup <= 1.0:
            warnings.warn(f"{mode} on {facts.where}: measured {measured_speedup:.2f}x the speed of float "
                          f"({facts.note}); the float model is as fast or faster here", EdgewardWarning,
                          stacklevel=stacklevel)
        return record
    if mode in INT8_COMPUTE_MODES and facts.fast_int8 is False:
        record["may_be_slower_than_float"] = True
        warnings.warn(f"{mode} on {facts.where}: {facts.note}, so the int8 model may be no faster than float, "
                      "or slower; measure it there (edgeward bench) or prefer a weight-only mode",
                      EdgewardWarning, stacklevel=stacklevel)
    return record
