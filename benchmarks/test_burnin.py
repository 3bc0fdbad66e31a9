"""Acceptance: burn-in, sustained GEMM for `[settings] burnin_s` with a silent-data-corruption check.

Every device multiplies the same seeded products over and over (probes/burnin.py): each repeat must
match the device's first result bit for bit, the first result must pass an fp64 checksum, and on
rank 0 every device's results must match those of its peers of the same model and software
(clusterbench.judge.burnin), whatever the profile says. The sustained throughput is judged against
the profile's `burnin.tflops` expectations and against the peers. NVML samples each GPU's clocks,
power, temperature and throttle reasons over its own soak: they are in the figures' details, and the
health tests judge them with the GEMM's samples.

The GPUs of one process soak at once, one thread each (the GEMMs release the GIL and each GPU has its
own stream), so the node is under its full power and cooling load as gpu-burn and DCGM's
targeted_power put it, and an 8-GPU node takes burnin_s, not 8 x burnin_s. Each device soaks once;
the test of each figure reads the same soak.
"""

from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

import pytest

from clusterbench import progress
from clusterbench.judge import burnin_checks
from clusterbench.probes import burnin
from clusterbench.probes.health import LoadReport, ThrottleSampler
from clusterbench.runners.runner import MeasuredOnceByKey


@dataclass
class Soaks:
    by_device: MeasuredOnceByKey = field(default_factory=MeasuredOnceByKey)
    loads: list[LoadReport] = field(default_factory=list)  # one per GPU, sampled over its own soak


@pytest.fixture(scope="module")
def soaks():
    return Soaks()


@pytest.mark.compute
@pytest.mark.parametrize("metric", burnin.PROBE.metric_names)
def test_burnin(acceptance, soaks, metric):
    def sampled(device):
        def run():
            return burnin.measure_burnin(
                device, burnin_s=acceptance.profile.settings.burnin_s, quick=acceptance.quick,
                location=acceptance.location(device.torch_device),
                on_step=progress.callback_for(f"burn-in {device.torch_device}"))

        if device.kind != "cuda":
            return run()
        with ThrottleSampler(devices={device.torch_device: device.uuid}) as sampler:
            measurements = run()
        soaks.loads.append(sampler.report)
        return burnin.with_load(measurements, sampler.report)

    def all_at_once() -> dict[str, Future]:
        gpus = [d for d in acceptance.devices if d.kind == "cuda"]
        with ThreadPoolExecutor(max_workers=max(len(gpus), 1), thread_name_prefix="burn-in") as pool:
            return {d.torch_device: pool.submit(sampled, d) for d in gpus}

    def soak(device):
        if device.kind != "cuda":
            return soaks.by_device.get(device.torch_device, lambda: sampled(device))
        return soaks.by_device.get("gpus", all_at_once)[device.torch_device].result()  # its error, if it failed

    measured = acceptance.measure(metric, soak, compare_peers=metric != burnin.MISMATCHES)
    acceptance.also_judge(burnin_checks)
    if measured and soaks.loads:
        load = LoadReport.merge(soaks.loads, soaks.loads[0].interval_s)
        if load.sampled:
            acceptance.health.load_reports["burnin"] = load
