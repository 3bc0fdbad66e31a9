"""The storage probe on filesystems made for the occasion: read-only, too small, filling up mid-run,
and refusing O_DIRECT. Mounting needs root (CAP_SYS_ADMIN), which CI has; elsewhere these skip."""

import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
from contextlib import contextmanager
from pathlib import Path

import pytest

from clusterbench.model import Location
from clusterbench.probes.storage import (
    CheckpointPlan,
    FioEngine,
    MetadataPlan,
    StorageRunError,
    StorageTargetError,
    Workload,
    Workspace,
    measure_storage,
    measure_workload,
    probe_target,
)
from clusterbench.probes.storage.checkpoint import measure_checkpoint

MiB = 1 << 20
HERE = Location("node01", 0, "node")
ENGINES = [
    pytest.param("fio",
                 marks=pytest.mark.skipif(shutil.which("fio") is None,
                                          reason="fio is not installed (apt-get install fio)")),
    "python",
]


@contextmanager
def mounted(where: Path, fstype: str, options: str):
    where.mkdir()
    done = subprocess.run(["mount", "-t", fstype, "-o", options, fstype, str(where)], capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a {fstype} here (needs root with CAP_SYS_ADMIN): {done.stderr.strip()}")
    try:
        yield where
    finally:
        subprocess.run(["umount", str(where)], check=True)


def test_a_read_only_filesystem_is_refused(tmp_path):
    with (mounted(tmp_path / "ro", "tmpfs", "ro,size=1m") as target,
          pytest.raises(StorageTargetError, match="is on a read-only filesystem; name a directory on a writable one")):
        Workspace.create(target, 0)


def test_a_directory_the_user_cannot_write_is_refused(tmp_path):
    """As root, permissions do not stop writes, so the check runs as nobody in a child process."""
    if os.getuid() != 0:
        tmp_path.chmod(0o555)
        with pytest.raises(StorageTargetError, match="is not writable by uid"):
            Workspace.create(tmp_path, 0)
        return
    # pytest's tmp_path sits in a 0700 directory nobody cannot enter, so use one under the system's.
    with tempfile.TemporaryDirectory() as parent:
        target = Path(parent) / "root-only"
        target.mkdir()
        for directory in (parent, target):
            os.chmod(directory, 0o755)
        script = textwrap.dedent(
            f"""
            import os
            from clusterbench.probes.storage.workspace import validate_target  # imported as root
            os.setgid(65534); os.setuid(65534)
            try:
                validate_target({str(target)!r}, 0)
            except ValueError as exc:
                print(exc)
            """
        )
        done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
        if "cannot be examined" in done.stdout:
            pytest.skip(f"user nobody cannot reach {parent}: {done.stdout.strip()}")
        assert done.stdout.strip() == (
            f"storage target {target} is not writable by uid 65534; name a directory this user may create files in"
        )
        assert list(target.iterdir()) == []


def test_too_little_space_for_the_working_size_is_refused_before_starting(tmp_path):
    with mounted(tmp_path / "small", "tmpfs", "size=1m") as target:
        with pytest.raises(StorageTargetError) as error:
            measure_storage(target, quick=True)
        assert "has 1.0 MiB free but the measurement needs" in str(error.value)
        assert os.listdir(target) == []


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("rw", ["randwrite", "read"])
def test_a_filesystem_filling_up_mid_run_is_one_line_and_leaves_nothing(tmp_path, engine, rw):
    workload = Workload("fill", rw, 4096, iodepth=4, numjobs=1, size_per_job=8 * MiB, runtime_s=0.5)
    with mounted(tmp_path / "tiny", "tmpfs", "size=2m") as target:
        # Workspace.create(target, None): the free-space check bypassed.
        with pytest.raises(StorageRunError) as error, Workspace.create(target, None) as workspace:
            fio = FioEngine.find() if engine == "fio" else None
            measure_workload(workload, workspace, probe_target(workspace), fio=fio, location=HERE)
        assert "No space left on device" in str(error.value) and "\n" not in str(error.value)
        assert workspace.cleanup_report.complete
        assert os.listdir(target) == []


def test_a_checkpoint_that_fills_the_filesystem_is_one_line_and_leaves_nothing(tmp_path):
    with mounted(tmp_path / "tiny", "tmpfs", "size=2m") as target:
        with pytest.raises(StorageRunError) as error, Workspace.create(target, None) as workspace:
            measure_checkpoint(workspace, probe_target(workspace), HERE, CheckpointPlan(width=256, layers=4, repeats=1))
        message = str(error.value)
        assert "checkpoint-0.pt" in message and "the filesystem is full" in message and "\n" not in message
        assert os.listdir(target) == []


@pytest.mark.parametrize("engine", ENGINES)
def test_o_direct_refused_falls_back_to_buffered_io_and_says_so(tmp_path, engine):
    """ramfs refuses O_DIRECT (tmpfs has accepted it since Linux 6.6, so it cannot stand in here)."""
    randread = Workload("randread_4k", "randread", 4096, iodepth=2, numjobs=1, size_per_job=4 * MiB, runtime_s=0.5)
    with mounted(tmp_path / "ram", "ramfs", "mode=0755") as target:
        result = measure_storage(
            target, engine=engine, location=HERE, workloads=(randread,),
            metadata=MetadataPlan(files=10, rounds=1), checkpoint=CheckpointPlan(width=32, layers=1, repeats=1),
        )
        assert os.listdir(target) == []
    assert result.engine == engine and not result.direct
    assert any("refuses O_DIRECT" in line and "buffered I/O" in line for line in result.fallbacks)
    iops = next(m for m in result.measurements if m.metric == "storage.randread_iops")
    assert iops.params["direct"] is False and iops.details["direct"] is False
    assert iops.details["page_cache_possible"] is True
    assert "buffered I/O because the filesystem refuses O_DIRECT" in iops.details["caveat"]
    assert "not a disk figure" in iops.details["caveat"]
    assert result.cleanup.complete and not result.failures
