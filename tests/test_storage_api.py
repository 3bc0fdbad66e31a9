"""measure_storage end to end on small plans: every metric, the engine and its fallbacks said
plainly, failures recorded without losing other figures, and the caveat rules."""

import json
import os
import shutil
from dataclasses import replace

import pytest

import clusterbench.probes.storage as storage
from clusterbench.metrics import METRICS
from clusterbench.model import Location, NotMeasured
from clusterbench.probes.storage import (
    CheckpointPlan,
    FioUnavailable,
    MetadataPlan,
    StorageIntegrityError,
    TargetFacts,
    Workload,
    measure_storage,
    standard_workloads,
)
from clusterbench.probes.storage.figures import page_cache_caveat

MiB = 1 << 20
HERE = Location("node01", 0, "node")
SMALL = dict(
    location=HERE,
    workloads=(
        Workload("randread_4k", "randread", 4096, iodepth=4, numjobs=1, size_per_job=4 * MiB, runtime_s=0.5),
        Workload("randwrite_4k", "randwrite", 4096, iodepth=4, numjobs=1, size_per_job=MiB, runtime_s=0.5),
        Workload("seqread_1m", "read", MiB, iodepth=2, numjobs=1, size_per_job=8 * MiB, runtime_s=0.5),
        Workload("seqwrite_1m", "write", MiB, iodepth=2, numjobs=1, size_per_job=8 * MiB, runtime_s=0.5),
    ),
    metadata=MetadataPlan(files=100, rounds=2),
    checkpoint=CheckpointPlan(width=64, layers=2, repeats=2),
)
ALL_METRICS = {
    "storage.randread_iops", "storage.randread_p99_us", "storage.randwrite_iops", "storage.seqread_gbps",
    "storage.seqwrite_gbps", "storage.metadata_ops", "checkpoint.save_gbps", "checkpoint.load_gbps",
}


@pytest.mark.parametrize("engine", [
    pytest.param("fio",
                 marks=pytest.mark.skipif(shutil.which("fio") is None,
                                          reason="fio is not installed (apt-get install fio)")),
    "python",
])
def test_every_metric_is_measured_with_its_registered_unit_and_nothing_is_left(tmp_path, engine):
    result = measure_storage(tmp_path, engine=engine, **SMALL)
    assert {m.metric for m in result.measurements} == ALL_METRICS
    assert result.engine == engine and not result.failures
    for m in result.measurements:
        assert m.unit == METRICS[m.metric].unit and m.value > 0 and m.location == HERE
        assert m.params["target"] == str(tmp_path.resolve())
        json.dumps(m.to_json())  # plain data, as results.json needs
    for m in result.measurements:
        if m.metric.startswith("storage.") and m.metric != "storage.metadata_ops":
            assert m.params["engine"] == engine and set(m.params) == {
                "target", "engine", "direct", "block_size", "iodepth", "numjobs"}
    writes = [m for m in result.measurements if m.details.get("rw") in ("randwrite", "write")]
    assert all(m.details["verified_bytes"] > 0 for m in writes)
    assert result.cleanup.complete and os.listdir(tmp_path) == []
    json.dumps(result.to_json())


def test_without_fio_the_python_engine_measures_and_the_result_says_why(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    result = measure_storage(tmp_path, **SMALL)
    assert result.engine == "python" and "fio is not installed" in result.engine_reason
    assert any(line.startswith("fio unavailable") for line in result.fallbacks)
    assert {m.params["engine"] for m in result.measurements if m.metric == "storage.randread_iops"} == {"python"}


def test_asking_for_fio_without_fio_is_not_measured(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    with pytest.raises(FioUnavailable) as error:
        measure_storage(tmp_path, engine="fio", **SMALL)
    assert isinstance(error.value, NotMeasured)
    assert os.listdir(tmp_path) == []


def test_corrupt_data_is_raised_after_every_workload_ran_with_the_figures_kept(tmp_path, monkeypatch):
    def corrupting(workload, workspace, after_write=None):
        def corrupt(paths):
            with open(paths[0], "r+b") as file:
                file.write(b"\xff" * 32)
        return run_python(workload, workspace, after_write=corrupt)

    run_python = storage.run_python
    monkeypatch.setattr(storage, "run_python", corrupting)
    with pytest.raises(StorageIntegrityError) as error:
        measure_storage(tmp_path, engine="python", **SMALL)
    result = error.value.result
    assert {f.workload for f in result.failures} == {"randwrite_4k", "seqwrite_1m"}
    assert all(f.integrity and "differs from what was written" in f.message for f in result.failures)
    measured = {m.metric for m in result.measurements}
    assert measured == ALL_METRICS - {"storage.randwrite_iops", "storage.seqwrite_gbps"}
    assert result.cleanup.complete and os.listdir(tmp_path) == []


def test_a_working_size_shrinks_the_files_to_fit(tmp_path):
    result = measure_storage(tmp_path, engine="python", working_size=2 * MiB, **SMALL)
    sizes = [m.details["size_per_job"] * m.params["numjobs"]
             for m in result.measurements if "size_per_job" in m.details]
    assert sizes and max(sizes) <= 2 * MiB


def test_standard_workloads_are_fios_reference_jobs():
    quick, full = standard_workloads(quick=True), standard_workloads(quick=False)
    for plan in (quick, full):
        assert [(w.rw, w.block_size) for w in plan] == [
            ("randread", 4096), ("randwrite", 4096), ("read", MiB), ("write", MiB)]
        assert all(w.direct for w in plan)
    assert max(w.runtime_s + w.ramp_s for w in quick) <= 3
    assert all(w.runtime_s >= 30 and w.iodepth * w.numjobs >= 64 for w in full)


def test_workloads_refuse_what_fio_or_o_direct_could_not_run():
    base = standard_workloads(quick=True)[0]
    with pytest.raises(ValueError, match="rw must be one of"):
        replace(base, rw="randrw")
    with pytest.raises(ValueError, match="multiple of 4096"):
        replace(base, block_size=512)
    with pytest.raises(ValueError, match="whole number of blocks"):
        replace(base, size_per_job=4096 * 3 + 1)
    assert base.fitted(MiB).footprint == MiB


def facts(filesystem: str = "ext4", direct: bool = True, memory: int = 16 << 30) -> TargetFacts:
    return TargetFacts("/data", filesystem, memory, None if direct else "the filesystem refuses O_DIRECT (EINVAL)")


def test_a_figure_that_may_be_the_page_cache_is_never_presented_as_a_disk_figure():
    read = Workload("r", "randread", 4096, iodepth=1, numjobs=2, size_per_job=MiB, runtime_s=1)
    assert page_cache_caveat(read, facts()) == (False, None)
    buffered = replace(read, direct=False)
    possible, caveat = page_cache_caveat(buffered, facts(direct=False))
    assert possible
    assert "buffered I/O because the filesystem refuses O_DIRECT" in caveat and "not a disk figure" in caveat
    big = replace(buffered, size_per_job=16 << 30)
    possible, caveat = page_cache_caveat(big, facts(direct=False))
    assert not possible and "exceeds RAM" in caveat
    possible, caveat = page_cache_caveat(read, facts(filesystem="tmpfs"))
    assert possible and "measures memory, not a disk" in caveat
    possible, caveat = page_cache_caveat(replace(buffered, rw="randwrite"), facts(direct=False))
    assert not possible and "flushed with fsync" in caveat
