import sys
from pathlib import Path

import pytest
import torch.distributed as dist

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def repo_root() -> Path:
    return REPO_ROOT


@pytest.fixture
def write_profile(tmp_path):
    """Write a profile file into a temporary profiles folder and return its path."""

    def write(text: str, name: str = "test-cluster") -> Path:
        path = tmp_path / "clusters" / f"{name}.toml"
        path.parent.mkdir(exist_ok=True)
        path.write_text(text)
        return path

    return write


@pytest.fixture
def python() -> str:
    return sys.executable


@pytest.fixture
def workspace(tmp_path):
    """A storage probe workspace in tmp_path, checked to be fully removed afterwards."""
    from clusterbench.probes.storage import Workspace

    with Workspace.create(tmp_path, None) as created:
        yield created
    assert created.cleanup_report.complete


@pytest.fixture
def one_rank_group():
    """A real single-rank Gloo group in this process, for what needs no peer."""
    dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
    yield
    dist.destroy_process_group()
