"""Storage workspace: target validation before anything is created, and cleanup that removes exactly
what the probe created, on success, exception, Ctrl-C and SIGTERM."""

import os
import signal
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from clusterbench.probes.storage import StorageTargetError, Workspace
from clusterbench.probes.storage.workspace import PREFIX, _safe_hostname, validate_target


def one_line(error: BaseException) -> str:
    message = str(error)
    assert "\n" not in message
    return message


def test_missing_path_is_refused_in_one_line_naming_it(tmp_path):
    missing = tmp_path / "nope"
    with pytest.raises(StorageTargetError) as error:
        Workspace.create(missing, 0)
    message = one_line(error.value)
    assert str(missing) in message and "does not exist" in message and "existing directory" in message


def test_a_file_is_refused_and_left_untouched(tmp_path):
    target = tmp_path / "data.bin"
    target.write_bytes(b"precious")
    with pytest.raises(StorageTargetError, match="is a file, not a directory"):
        Workspace.create(target, 0)
    assert target.read_bytes() == b"precious"


def test_a_character_device_is_refused():
    with pytest.raises(StorageTargetError, match="is a device node; clusterbench never writes to devices"):
        validate_target(Path("/dev/null"), 0)


def test_a_block_device_node_is_refused(tmp_path):
    node = tmp_path / "disk"
    try:
        os.mknod(node, stat.S_IFBLK | 0o600, os.makedev(7, 0))
    except PermissionError:
        pytest.skip("creating a block device node needs root (CAP_MKNOD)")
    with pytest.raises(StorageTargetError, match="device node"):
        Workspace.create(node, 0)


def test_too_little_space_is_refused_before_anything_is_created(tmp_path):
    vfs = os.statvfs(tmp_path)
    free = vfs.f_bavail * vfs.f_frsize
    with pytest.raises(StorageTargetError) as error:
        Workspace.create(tmp_path, 2 * free)
    assert "free but the measurement needs" in one_line(error.value)
    assert list(tmp_path.iterdir()) == []


def test_workspace_is_a_fresh_private_directory_named_for_host_and_process(tmp_path):
    with Workspace.create(tmp_path, 0) as workspace:
        assert workspace.path.parent == tmp_path.resolve()
        assert workspace.path.name.startswith(f"{PREFIX}{_safe_hostname()}-{os.getpid()}-")
        assert stat.S_IMODE(workspace.path.stat().st_mode) == 0o700
        with Workspace.create(tmp_path, 0) as second:
            assert second.path != workspace.path
    assert list(tmp_path.iterdir()) == []


def test_cleanup_removes_what_it_created_and_nothing_that_was_there(tmp_path):
    (tmp_path / "keep.txt").write_text("user data")
    (tmp_path / "keepdir").mkdir()
    with Workspace.create(tmp_path, 0) as workspace:
        for name in ("a", "b"):
            workspace.file(name).write_bytes(b"x" * 100)
        workspace.file("claimed-never-created")
    report = workspace.cleanup_report
    assert report.complete and report.removed_files == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.txt", "keepdir"]
    assert (tmp_path / "keep.txt").read_text() == "user data"


def test_files_it_did_not_create_are_reported_and_kept(tmp_path):
    with Workspace.create(tmp_path, 0) as workspace:
        workspace.file("ours").write_text("ours")
        (workspace.path / "stranger").write_text("someone else's")
    report = workspace.cleanup_report
    assert not report.complete and not report.directory_removed
    assert report.left_behind == ["stranger (not created by clusterbench; left in place)"]
    assert [p.name for p in workspace.path.iterdir()] == ["stranger"]
    assert "stranger" in report.summary()


def test_a_symlink_in_the_workspace_is_removed_not_followed(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    victim = outside / "victim"
    victim.write_text("must survive")
    with Workspace.create(tmp_path, 0) as workspace:
        os.symlink(victim, workspace.file("link"))
    assert victim.read_text() == "must survive"
    assert workspace.cleanup_report.complete
    assert [p.name for p in tmp_path.iterdir()] == ["outside"]


def test_only_plain_claimed_names_may_be_created_or_removed(tmp_path):
    with Workspace.create(tmp_path, 0) as workspace:
        with pytest.raises(ValueError):
            workspace.file("../escape")
        with pytest.raises(ValueError, match="not claimed"):
            workspace.remove("never-claimed")


@pytest.mark.parametrize("interruption", [RuntimeError("boom"), KeyboardInterrupt()])
def test_cleanup_runs_on_exception_and_ctrl_c(tmp_path, interruption):
    with pytest.raises(type(interruption)), Workspace.create(tmp_path, 0) as workspace:
        workspace.file("half-written").write_bytes(b"partial")
        raise interruption
    assert workspace.cleanup_report.complete
    assert list(tmp_path.iterdir()) == []


def test_sigterm_handler_is_restored_after_the_workspace(tmp_path):
    before = signal.getsignal(signal.SIGTERM)
    with Workspace.create(tmp_path, 0):
        assert signal.getsignal(signal.SIGTERM) is not before
    assert signal.getsignal(signal.SIGTERM) is before


def test_sigterm_removes_the_workspace_then_ends_the_process_as_sigterm_does(tmp_path):
    script = textwrap.dedent(
        f"""
        import sys, time
        from pathlib import Path
        from clusterbench.probes.storage import Workspace
        with Workspace.create(Path({str(tmp_path)!r}), 0) as workspace:
            workspace.file("data").write_bytes(b"x" * 4096)
            print(workspace.path, flush=True)
            time.sleep(60)
        """
    )
    child = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        created = Path(child.stdout.readline().strip())
        assert (created / "data").exists()
        child.send_signal(signal.SIGTERM)
        assert child.wait(timeout=20) == -signal.SIGTERM
    finally:
        child.kill()
        child.wait()
    assert not created.exists()
    assert list(tmp_path.iterdir()) == []
