"""Does a variant fit a device? Model file plus working memory against the profile's RAM,
and the model file against its storage (flash on a microcontroller).

The working memory is the peak RSS measured on that device when a bench ran there (it
includes the runtime), else the estimate (model + peak activations, from
toolkit.bench.estimate). A profile that states no RAM or storage cannot refuse a model:
that figure is reported as not checked.
"""

from __future__ import annotations

from dataclasses import dataclass

MB = 2**20


@dataclass
class Fit:
    fits: bool
    ram_needed_mb: float | None
    ram_mb: float | None
    model_mb: float
    storage_mb: float | None
    basis: str  # where ram_needed_mb came from
    why: str  # "" when it fits

    def to_dict(self) -> dict:
        return {"fits": self.fits, "ram_needed_mb": self.ram_needed_mb, "ram_mb": self.ram_mb,
                "model_mb": self.model_mb, "storage_mb": self.storage_mb, "basis": self.basis, "why": self.why}


def device_memory(profile) -> tuple[float | None, float | None]:
    """(RAM MB, storage MB) a profile states (MB = 2**20 bytes); storage is flash on an MCU."""
    ram, storage = profile.ram_bytes, profile.storage_bytes
    return (ram / MB if ram is not None else None), (storage / MB if storage is not None else None)


def check_fit(size_bytes: int, ram_needed_mb: float | None, basis: str, profile) -> Fit:
    ram_mb, storage_mb = device_memory(profile)
    model_mb = size_bytes / MB
    reasons = []
    if ram_needed_mb is not None and ram_mb is not None and ram_needed_mb > ram_mb:
        reasons.append(f"needs {ram_needed_mb:.4g} MB of memory ({basis}), {profile.name} has {ram_mb:.4g} MB")
    if storage_mb is not None and model_mb > storage_mb:
        reasons.append(f"the {model_mb:.4g} MB model exceeds {profile.name}'s {storage_mb:.4g} MB of storage")
    return Fit(not reasons, ram_needed_mb, ram_mb, round(model_mb, 6), storage_mb, basis, "; ".join(reasons))


def fit_of(variant, measurement, profile) -> Fit:
    """The fit of a variant on the measured or estimated device."""
    if measurement is not None and measurement.memory_mb is not None:
        basis = "estimate: model + peak activations" if measurement.estimate else \
            f"peak RSS measured on {measurement.device}"
        return check_fit(variant.size_bytes, measurement.memory_mb, basis, profile)
    return check_fit(variant.size_bytes, variant.size_bytes / MB, "model file only (no memory figure)", profile)
