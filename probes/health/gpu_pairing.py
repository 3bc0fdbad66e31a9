"""Which NVML GPU is which CUDA device: pairing by UUID, never by index.

NVML numbers GPUs in PCI bus order and sees every GPU of the host; CUDA numbers only the devices
this process may use (CUDA_VISIBLE_DEVICES, a launcher's binding), fastest first unless
CUDA_DEVICE_ORDER=PCI_BUS_ID. So CUDA device 0 can be NVML GPU 5, and an NVML GPU can be one no
process of this run loads (idle, its PCIe link trained down). The UUID is the one name both agree on:

    NVML  nvmlDeviceGetUUID              "GPU-5f3c1a2b-...."   (a MIG slice: "MIG-...")
    torch get_device_properties(i).uuid  "5f3c1a2b-...."       (no prefix; torch >= 2.1)

A MIG slice pairs with nothing: its clocks, power, PCIe link and ECC counters are its parent GPU's,
shared with the other slices, so they say nothing about the slice this process loads.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from clusterbench.probes.health.nvml_session import GpuLost, text

_NVML_PREFIXES = ("GPU-", "MIG-")


def same_uuid_key(uuid: str) -> str:
    """The form two UUIDs are compared in: lower case, without NVML's "GPU-"/"MIG-" prefix."""
    uuid = uuid.strip()
    for prefix in _NVML_PREFIXES:
        if uuid.upper().startswith(prefix):
            uuid = uuid[len(prefix):]
            break
    return uuid.lower()


@dataclass(frozen=True)
class NvmlGpuId:
    """What pairing needs to know of one NVML GPU: its index, its UUID, and its MIG slices' UUIDs."""

    index: int
    uuid: str | None
    mig_uuids: tuple[str, ...] = ()


@dataclass
class Pairing:
    """CUDA devices (by the caller's label, e.g. "cuda:0") paired with NVML indices, or why not."""

    indices: dict[str, int] = field(default_factory=dict)
    unpaired: dict[str, str] = field(default_factory=dict)

    def label_of(self, index: int) -> str | None:
        return next((label for label, paired in self.indices.items() if paired == index), None)


def pair_devices(devices: Mapping[str, str | None], gpus: Sequence[NvmlGpuId]) -> Pairing:
    """Pair each device label -> CUDA UUID of `devices` with the NVML GPU of the same UUID."""
    by_uuid = {same_uuid_key(gpu.uuid): gpu.index for gpu in gpus if gpu.uuid}
    slices = {same_uuid_key(mig): gpu.index for gpu in gpus for mig in gpu.mig_uuids}
    pairing = Pairing()
    for label, uuid in devices.items():
        if not uuid:
            pairing.unpaired[label] = (
                "torch gives no UUID for this device (torch.cuda.get_device_properties(i).uuid needs torch >= 2.1), "
                "so it cannot be matched with its NVML GPU"
            )
            continue
        key = same_uuid_key(uuid)
        if key in by_uuid:
            pairing.indices[label] = by_uuid[key]
        elif key in slices:
            pairing.unpaired[label] = (
                f"a MIG slice of NVML GPU {slices[key]}: clocks, power, PCIe and ECC are the whole GPU's, shared "
                "with its other slices, so they are not judged per slice"
            )
        else:
            names = ", ".join(gpu.uuid for gpu in gpus if gpu.uuid) or "none"
            pairing.unpaired[label] = f"no NVML GPU has UUID {uuid} (NVML sees: {names})"
    return pairing


def read_gpu_ids(nvml: Any) -> list[NvmlGpuId]:
    """The index, UUID and MIG slices of every GPU NVML enumerates, in an open session.

    A GPU that cannot be opened or read is listed without a UUID: it pairs with nothing. One lost
    after its UUID was read keeps it, so that the process driving it reads it and reports the loss."""
    ids = []
    for index in range(nvml.nvmlDeviceGetCount()):
        try:
            handle = nvml.nvmlDeviceGetHandleByIndex(index)
            uuid = text(nvml.nvmlDeviceGetUUID(handle))
        except nvml.NVMLError:
            ids.append(NvmlGpuId(index, None))
            continue
        try:
            ids.append(NvmlGpuId(index, uuid, read_mig_uuids(nvml, handle)))
        except GpuLost:
            ids.append(NvmlGpuId(index, uuid))
    return ids


def read_mig_uuids(nvml: Any, handle: Any) -> tuple[str, ...]:
    """UUIDs of the MIG slices of the GPU at `handle`; () when MIG is off, unsupported, or unknown here.

    Raises GpuLost when NVML says the GPU is lost."""
    mig_mode = getattr(nvml, "nvmlDeviceGetMigMode", None)
    if mig_mode is None:
        return ()  # a binding older than MIG (R450) cannot have MIG slices to pair with either
    try:
        current, _pending = mig_mode(handle)
        if current != nvml.NVML_DEVICE_MIG_ENABLE:
            return ()
        count = nvml.nvmlDeviceGetMaxMigDeviceCount(handle)
    except nvml.NVMLError as exc:
        if exc.value == nvml.NVML_ERROR_GPU_IS_LOST:
            raise GpuLost("mig") from None
        return ()  # NOT_SUPPORTED on every GPU without MIG (anything before A100/H100)
    uuids = []
    for slot in range(count):
        try:
            uuids.append(text(nvml.nvmlDeviceGetUUID(nvml.nvmlDeviceGetMigDeviceHandleByIndex(handle, slot))))
        except nvml.NVMLError:
            continue  # NOT_FOUND: this slot holds no slice (slices need not fill the slots)
    return tuple(uuids)
