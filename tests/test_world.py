"""Launcher detection: torchrun, Slurm srun, MPI and a plain world of one, from their environments."""

import pytest

from clusterbench.world import LaunchError, detect_world, expand_hostlist


@pytest.mark.parametrize(
    "hostlist, hosts",
    [
        ("gpu01", ["gpu01"]),
        ("gpu[01-03]", ["gpu01", "gpu02", "gpu03"]),
        ("gpu[01-02,07],login1", ["gpu01", "gpu02", "gpu07", "login1"]),
        ("rack1-n[8-10]", ["rack1-n8", "rack1-n9", "rack1-n10"]),
        ("a[1,3]b", ["a1b", "a3b"]),
    ],
)
def test_expand_hostlist(hostlist, hosts):
    assert expand_hostlist(hostlist) == hosts


def test_plain_process_is_a_world_of_one():
    world = detect_world({})
    assert (world.launcher, world.rank, world.size, world.is_distributed) == ("local", 0, 1, False)


def test_torchrun_environment():
    env = {"TORCHELASTIC_RUN_ID": "x", "RANK": "5", "WORLD_SIZE": "16", "LOCAL_RANK": "1",
           "LOCAL_WORLD_SIZE": "8", "MASTER_ADDR": "node0", "MASTER_PORT": "29400"}
    world = detect_world(env)
    assert (world.launcher, world.rank, world.size, world.local_rank, world.local_size) == ("torchrun", 5, 16, 1, 8)
    assert (world.master_addr, world.master_port) == ("node0", 29400)


def test_torchrun_wins_over_slurm_it_runs_under():
    env = {"RANK": "1", "WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1", "SLURM_PROCID": "0", "SLURM_STEP_NUM_TASKS": "1"}
    assert detect_world(env).launcher == "torchrun"


def test_srun_environment_takes_master_from_the_node_list():
    env = {"SLURM_PROCID": "3", "SLURM_STEP_NUM_TASKS": "4", "SLURM_LOCALID": "1", "SLURM_JOB_ID": "77",
           "SLURM_STEP_ID": "0", "SLURM_STEP_NODELIST": "gpu[07-08]", "SLURM_STEP_TASKS_PER_NODE": "2(x2)"}
    world = detect_world(env)
    assert (world.launcher, world.rank, world.size, world.local_rank, world.local_size) == ("slurm", 3, 4, 1, 2)
    assert world.master_addr == "gpu07"
    # Every task derives the same port from the job and step IDs, without talking to the others.
    assert world.master_port == detect_world({**env, "SLURM_PROCID": "0"}).master_port
    assert 20000 <= world.master_port < 40000


def test_salloc_shell_without_srun_is_not_a_world():
    assert detect_world({"SLURM_PROCID": "0", "SLURM_NTASKS": "8", "SLURM_JOB_ID": "1"}).launcher == "local"


def test_bad_launcher_values_are_one_line_errors():
    with pytest.raises(LaunchError, match="RANK='x' is not an integer"):
        detect_world({"RANK": "x", "WORLD_SIZE": "2", "MASTER_ADDR": "h"})
