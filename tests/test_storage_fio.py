"""The fio engine: real fio runs parsed into figures, writes verified, corruption caught, and fio
missing, failing or hanging reported in one line."""

import os
import shutil
import stat
import time
from dataclasses import replace
from pathlib import Path

import pytest

from clusterbench.model import Location, NotMeasured
from clusterbench.probes.storage import (
    FioEngine,
    FioUnavailable,
    StorageIntegrityError,
    StorageRunError,
    Workload,
    measure_workload,
    probe_target,
)
from clusterbench.probes.storage.fio_engine import parse_json_output, read_iops_logs

MiB = 1 << 20
HERE = Location("node01", 0, "node")
requires_fio = pytest.mark.skipif(
    shutil.which("fio") is None, reason="fio is not installed (apt-get install fio); these tests run the real binary"
)

RANDREAD = Workload("randread_4k", "randread", 4096, iodepth=4, numjobs=2, size_per_job=8 * MiB, runtime_s=1.0)
RANDWRITE = Workload("randwrite_4k", "randwrite", 4096, iodepth=4, numjobs=2, size_per_job=2 * MiB, runtime_s=1.0)


def fake_fio(directory: Path, body: str) -> Path:
    """An executable named fio that answers --version like fio 3.33 and otherwise runs `body`."""
    script = directory / "fio"
    script.write_text(f'#!/bin/sh\nif [ "$1" = "--version" ]; then echo fio-3.33; exit 0; fi\n{body}\n')
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return script


@requires_fio
def test_random_read_figures_are_fios_group_figures(workspace):
    figures = FioEngine.find().run(RANDREAD, workspace)
    assert figures.engine == "fio" and figures.ioengine in ("libaio", "io_uring", "psync")
    assert figures.total_ios > 0
    assert 0.9 <= figures.seconds <= 1.5
    # fio's iops is its I/O count over its runtime, and 4 KiB each makes the bandwidth.
    assert figures.iops == pytest.approx(figures.total_ios / figures.seconds, rel=0.02)
    assert figures.bandwidth_bps == pytest.approx(figures.iops * 4096, rel=0.02)
    latency = figures.latency_ns
    assert 0 < latency["p50"] <= latency["p99"] <= latency["p99.9"]
    # Half-second windows summed over both jobs, each about the run's rate.
    assert len(figures.interval_iops) >= 1
    assert all(0 < sample < 10 * figures.iops for sample in figures.interval_iops)
    assert "--rw=randread" in figures.command and "--numjobs=2" in figures.command
    assert figures.verified_bytes is None
    assert os.listdir(workspace.path) == []  # data files and IOPS logs removed as the workload ends


@requires_fio
def test_measurements_name_the_job_and_flag_what_may_not_be_a_disk(workspace):
    facts = probe_target(workspace)
    iops, p99 = measure_workload(RANDREAD, workspace, facts, fio=FioEngine.find(), location=HERE)
    assert (iops.metric, iops.unit, p99.metric, p99.unit) == ("storage.randread_iops", "IOPS",
                                                              "storage.randread_p99_us", "us")
    assert iops.params == {
        "target": facts.target, "engine": "fio", "direct": facts.direct, "block_size": 4096, "iodepth": 4, "numjobs": 2,
    }
    assert p99.value == pytest.approx(iops.details["latency_us"]["p99"])
    assert iops.samples and iops.value > 0
    assert iops.details["direct"] is facts.direct
    assert (iops.details["caveat"] is None) == (facts.direct and not facts.memory_backed)


@requires_fio
def test_every_block_written_is_read_back_and_verified(workspace):
    figures = FioEngine.find().run(RANDWRITE, workspace)
    assert figures.total_ios * 4096 == RANDWRITE.footprint
    assert figures.verified_bytes == RANDWRITE.footprint


@requires_fio
def test_a_ramp_sizes_the_measured_write_to_the_runtime(workspace):
    planned = replace(RANDWRITE, rw="write", block_size=MiB, size_per_job=256 * MiB, runtime_s=0.3, ramp_s=0.2)
    figures = FioEngine.find().run(planned, workspace)
    measured = figures.workload
    assert 64 * MiB <= measured.size_per_job <= planned.size_per_job
    assert figures.verified_bytes == measured.footprint == figures.total_ios * MiB


@requires_fio
def test_data_corrupted_between_write_and_verify_is_an_integrity_error(workspace):
    def corrupt(paths):
        fd = os.open(paths[1], os.O_WRONLY)
        os.pwrite(fd, b"\xff" * 16, 3 * 4096 + 100)
        os.close(fd)

    with pytest.raises(StorageIntegrityError) as error:
        FioEngine.find().run(RANDWRITE, workspace, after_write=corrupt)
    assert "differs from what was written" in str(error.value) and "verify failed" in str(error.value)
    assert "\n" not in str(error.value)
    assert os.listdir(workspace.path) == []


def test_json_is_found_after_fio_error_lines():
    stdout = ('fio: pid=12, err=84/file:io_u.c:2190, func=io_u_queued_complete, error=Invalid\n'
              '{\n  "jobs": [{"error": 84}]\n}\n')
    assert parse_json_output(stdout) == {"jobs": [{"error": 84}]}
    assert parse_json_output("fio: no JSON at all\n") is None


def test_iops_logs_are_summed_window_by_window_over_jobs(tmp_path):
    (tmp_path / "a_iops.1.log").write_text("500, 100, 0, 4096, 0\n1000, 120, 0, 4096, 0\n1500, 90, 0, 4096, 0\n")
    (tmp_path / "a_iops.2.log").write_text("500, 10, 0, 4096, 0\n1000, 12, 0, 4096, 0\n1000, 7, 1, 4096, 0\n")
    logs = [tmp_path / "a_iops.1.log", tmp_path / "a_iops.2.log"]
    assert read_iops_logs(logs, ddir=0) == [110.0, 132.0]  # the shorter log sets the windows
    assert read_iops_logs(logs, ddir=1) == []


def test_fio_missing_is_not_measured_with_how_to_install(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(FioUnavailable, match="fio is not installed") as error:
        FioEngine.find()
    assert isinstance(error.value, NotMeasured)


def test_fio_older_than_3_is_refused(monkeypatch, tmp_path):
    script = tmp_path / "fio"
    script.write_text("#!/bin/sh\necho fio-2.2.10\n")
    script.chmod(0o755)
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(FioUnavailable, match="needs fio 3.0 or later"):
        FioEngine.find()


def test_fio_failing_gives_one_line_with_its_last_stderr_line(monkeypatch, tmp_path, workspace):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake_fio(bin_dir, 'echo "fio: opening the file" >&2\necho "fio: something broke" >&2\nexit 1')
    monkeypatch.setenv("PATH", str(bin_dir))
    with pytest.raises(StorageRunError) as error:
        FioEngine.find().run(RANDREAD, workspace, ioengine="psync")
    assert str(error.value) == "fio randread_4k failed: exit status 1: fio: something broke"


def test_hung_fio_is_killed_with_its_job_processes_and_reported(tmp_path, workspace):
    # Like fio, the fake forks a job process; both must be gone when the error is raised.
    script = fake_fio(tmp_path, f"sleep 30 &\necho $! > {tmp_path}/job.pid\nwait")
    engine = FioEngine(str(script), "fio-3.33")
    with pytest.raises(StorageRunError, match="fio did not finish within 2 s"):
        engine.execute([str(script), "--name=hang"], workspace, timeout_s=2)
    job = Path(f"/proc/{int((tmp_path / 'job.pid').read_text())}/stat")

    def running() -> bool:  # a zombie (state Z) waiting for init to reap it is not running
        try:
            return job.read_text().rsplit(")", 1)[1].split()[0] != "Z"
        except FileNotFoundError:
            return False

    # SIGKILL has been sent; the process may take a moment to finish exiting.
    deadline = time.monotonic() + 5
    while running() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not running()
