"""tools/mpi_fidelity.py: IMB-MPI1's and osu_allreduce's tables read into busbw, paired ratios, missing peers."""

from __future__ import annotations

import importlib.util
import sys

import pytest

# The peers' table layouts, as IMB-MPI1 Allreduce and osu_allreduce (OMB 5.x) print them (2 ranks).
IMB_OUTPUT = """
#----------------------------------------------------------------
# Benchmarking Allreduce
# #processes = 2
#----------------------------------------------------------------
       #bytes #repetitions  t_min[usec]  t_max[usec]  t_avg[usec]
      4194304          100      1990.00      2010.00      2000.00


# All processes entering MPI_Finalize
"""
OSU_OUTPUT = """
# OSU MPI Allreduce Latency Test v5.7
# Size       Avg Latency(us)
4194304              4000.00
"""


@pytest.fixture
def tool(repo_root, monkeypatch):
    """tools/mpi_fidelity.py, a script outside the package, loaded as a module."""
    spec = importlib.util.spec_from_file_location("mpi_fidelity", repo_root / "tools" / "mpi_fidelity.py")
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "mpi_fidelity", module)  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def _setup(tool):
    return tool.Setup("mpiexec", 2, "/x/IMB-MPI1", "/x/osu_allreduce", [4 << 20], 100, 10, False, None)


def test_peer_tables_read_as_busbw_of_their_mean_time(tool, monkeypatch):
    commands = []
    monkeypatch.setattr(tool, "_run", lambda command: commands.append(command) or (
        IMB_OUTPUT if command[3] == "/x/IMB-MPI1" else OSU_OUTPUT))
    # busbw = bytes / t x 2(n-1)/n; n = 2 makes the factor 1.
    assert tool.run_imb(_setup(tool), 4 << 20) == pytest.approx((4 << 20) / 2000e-6 / 1e9)
    assert tool.run_osu(_setup(tool), 4 << 20) == pytest.approx((4 << 20) / 4000e-6 / 1e9)
    imb, osu = commands
    # IMB caps -msgsize at 4 MiB without a word, so the size goes as -msglog; both get OSU's counts.
    assert imb[imb.index("-msglog") + 1] == "22:22" and imb[imb.index("-iter") + 1] == "100"
    assert osu[osu.index("-m") + 1] == f"{4 << 20}:{4 << 20}" and osu[osu.index("-x") + 1] == "10"


def test_a_peer_without_the_size_is_an_error_not_a_figure(tool, monkeypatch):
    monkeypatch.setattr(tool, "_run", lambda command: OSU_OUTPUT)
    with pytest.raises(RuntimeError, match="osu_allreduce printed no row for 1048576 bytes"):
        tool.run_osu(_setup(tool), 1 << 20)


def test_ratios_are_medians_of_per_round_pairs(tool):
    # Round 2's drift hits the probe and its peers alike: the paired ratio stays 1 where a ratio of
    # medians would not.
    results = [{"probe": {8: p}, "imb": {8: i}, "osu": {8: o}} for p, i, o in [(1.0, 1.0, 2.0), (5.0, 5.0, 10.0),
                                                                                (1.2, 1.0, 2.0)]]
    [row] = tool.summarise(results, [8])
    assert row["probe/imb"] == 1.0 and row["probe/osu"] == 0.5 and row["imb/osu"] == 0.5
    assert (row["probe"], row["imb"], row["osu"]) == (1.2, 1.0, 2.0)


def test_a_missing_peer_binary_is_one_line_and_a_non_zero_exit(tool, tmp_path, capsys):
    osu = tmp_path / "osu_allreduce"
    osu.write_text("#!/bin/sh\n")
    osu.chmod(0o755)
    assert tool.main(["--imb", str(tmp_path / "IMB-MPI1"), "--osu", str(osu)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"mpi_fidelity: IMB-MPI1 binary not found or not executable: {tmp_path / 'IMB-MPI1'}"]
