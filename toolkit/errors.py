"""Typed errors. The CLI alone turns them into exit codes (see DESIGN.md)."""


class EdgewardError(Exception):
    """Base class. The message is one line a user can act on."""

    exit_code = 2


class BadInput(EdgewardError):
    """Usage, missing/corrupt/unsafe file, data that does not match the model."""

    exit_code = 2


class GateFailed(EdgewardError):
    """A gate failed: accuracy below the bar, the model does not fit the device."""

    exit_code = 1


class Unsupported(EdgewardError):
    """An op or mode the converter or runtime cannot handle (named in the message)."""

    exit_code = 3


class NothingQuantized(Unsupported):
    """A quantization mode that would change no weight of this model (named in the message)."""


class DeviceError(EdgewardError):
    """Device or transport fault: unreachable, host key refused, runtime missing, timeout."""

    exit_code = 4


class EdgewardWarning(UserWarning):
    """Something worth knowing that did not stop the work (the CLI shows it as `warning: ...`)."""


def missing_library(package: str, extra: str = "ml") -> BadInput:
    return BadInput(f"{package} is not installed: pip install 'edgeward[{extra}]' (or pip install {package})")
