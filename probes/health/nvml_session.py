"""Talking to NVML without ever crashing on it: one session, and field reads that degrade to None.

NVML answers differently per GPU generation, driver and binding version, and per privilege. Every
read therefore goes through `FieldReader`, which turns each failure into `None` plus a one-line
reason, except a lost GPU, which is a health failure in its own right and stops reading that GPU.

The NVML module is passed in (tests pass a fake); when it is not, pynvml (from nvidia-ml-py) is
imported here, lazily, so that importing clusterbench never needs it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from typing import Any

from clusterbench.model import NotMeasured

NOT_SUPPORTED = "not supported"
NO_PERMISSION = "no permission"
NOT_IN_DRIVER = "not available in this driver"

# Hints for the nvmlInit failures a user is most likely to meet; NVML's own text is kept as well.
_INIT_HINTS = {
    "NVML_ERROR_LIBRARY_NOT_FOUND": "no NVIDIA driver installed on this host",
    "NVML_ERROR_DRIVER_NOT_LOADED": "the NVIDIA kernel module is not loaded; check nvidia-smi and dmesg",
    "NVML_ERROR_NO_PERMISSION": "this user may not open the NVIDIA device files",
    "NVML_ERROR_LIB_RM_VERSION_MISMATCH": "driver library and kernel module versions differ; reboot or reload",
}


class GpuLost(Exception):
    """NVML answered NVML_ERROR_GPU_IS_LOST: the GPU has fallen off the bus or stopped responding."""

    def __init__(self, field: str) -> None:
        super().__init__(f"GPU lost (NVML_ERROR_GPU_IS_LOST while reading {field})")
        self.field = field


def import_nvml() -> Any:
    try:
        import pynvml
    except ImportError:
        raise NotMeasured("NVML unavailable: nvidia-ml-py is not installed (pip install nvidia-ml-py)") from None
    return pynvml


@contextmanager
def nvml_session(nvml: Any | None = None) -> Iterator[Any]:
    """nvmlInit ... nvmlShutdown around the block; NotMeasured when NVML cannot be initialised."""
    nvml = nvml if nvml is not None else import_nvml()
    try:
        nvml.nvmlInit()
    except nvml.NVMLError as exc:
        raise NotMeasured(f"NVML unavailable: {_describe_init_failure(nvml, exc)}") from None
    try:
        yield nvml
    finally:
        # Everything was read already; a failing shutdown cannot change any figure.
        with suppress(nvml.NVMLError):
            nvml.nvmlShutdown()


def _describe_init_failure(nvml: Any, exc: Exception) -> str:
    code = getattr(exc, "value", None)
    for constant, hint in _INIT_HINTS.items():
        if code is not None and code == getattr(nvml, constant, object()):
            return f"{exc} ({hint})"
    return str(exc)


def nvml_reason(nvml: Any, exc: Exception) -> str:
    """The one-line reason an NVML read gave no value."""
    code = getattr(exc, "value", None)
    if code == nvml.NVML_ERROR_NOT_SUPPORTED:
        return NOT_SUPPORTED
    if code == nvml.NVML_ERROR_NO_PERMISSION:
        return NO_PERMISSION
    if code == nvml.NVML_ERROR_FUNCTION_NOT_FOUND:
        return NOT_IN_DRIVER
    return f"NVML error: {exc}"


class FieldReader:
    """Reads NVML values one field at a time; a failed field reads as None, its reason kept by name."""

    def __init__(self, nvml: Any) -> None:
        self.nvml = nvml
        self.unavailable: dict[str, str] = {}

    def read(
        self, field: str, *functions: str, args: tuple[Any, ...] = (), convert: Callable[[Any], Any] | None = None
    ) -> Any:
        """Call the first of `functions` this driver and binding provide, with `args`.

        Later names are older spellings, tried only when an earlier one is missing from the binding
        (AttributeError) or from the driver (NVML_ERROR_FUNCTION_NOT_FOUND). Raises GpuLost.
        """
        reason = NOT_IN_DRIVER
        for name in functions:
            function = getattr(self.nvml, name, None)
            if function is None:
                continue
            try:
                value = function(*args)
            except self.nvml.NVMLError as exc:
                if exc.value == self.nvml.NVML_ERROR_GPU_IS_LOST:
                    raise GpuLost(field) from None
                reason = nvml_reason(self.nvml, exc)
                if reason == NOT_IN_DRIVER:
                    continue
                break
            self.unavailable.pop(field, None)
            return convert(value) if convert is not None else value
        self.unavailable[field] = reason
        return None


def text(value: Any) -> str:
    """NVML strings: older bindings return bytes, newer ones str."""
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)
