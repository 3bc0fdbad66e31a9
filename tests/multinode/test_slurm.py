"""The acceptance suite under a real Slurm: deploy/slurm/clusterbench.sbatch submitted with sbatch to
slurmctld and slurmd started for this session, its srun line starting two tasks that run as the two
ranks of one pytest session."""

from __future__ import annotations

import subprocess
import time

from node_runs import REPO_ROOT

from test_multirank import results

RECIPE = REPO_ROOT / "deploy" / "slurm" / "clusterbench.sbatch"


def submit_and_wait(slurm_cluster, args: list[str], env: dict[str, str], timeout_s: float = 240) -> str:
    """Submit with sbatch and return `scontrol show job` once the job has left the queue. Polled
    here rather than with `sbatch --wait`, whose back-off adds up to ten idle seconds."""
    submit = subprocess.run(["sbatch", "--parsable", *args], env=env, check=False, capture_output=True, text=True,
                            timeout=30)
    assert submit.returncode == 0, submit.stderr
    job = submit.stdout.strip().split(";")[0]
    deadline = time.monotonic() + timeout_s
    while slurm_cluster.client("squeue", "--noheader", "--jobs", job).stdout.strip():
        if time.monotonic() > deadline:
            slurm_cluster.client("scancel", job)
            raise AssertionError(f"job {job} still running after {timeout_s:g} s")
        time.sleep(0.2)
    return slurm_cluster.client("scontrol", "show", "job", job).stdout


def test_sbatch_recipe_runs_the_suite_as_two_srun_tasks(slurm_cluster, tmp_path):
    """The recipe as shipped, its #SBATCH lines shrunk on the command line to this one 2-CPU node
    without GPUs (srun then starts 2 tasks), its srun line unchanged."""
    report = tmp_path / "report"
    env = {**slurm_cluster.environment(), "CLUSTER": "local", "REPORT_DIR": str(report),
           "CLUSTERBENCH_DIR": str(REPO_ROOT)}
    job_out = tmp_path / "job.out"
    state = submit_and_wait(slurm_cluster,
                            ["--nodes=1", "--ntasks-per-node=2", "--cpus-per-task=1", "--gpus-per-task=0",
                                            f"--output={job_out}", str(RECIPE),
                                            "-p", "no:cacheprovider", "--quick", "-m", "network or compute", "-k",
                                            "scaling or fp32"],
                           env)
    output = job_out.read_text() if job_out.exists() else ""
    assert "JobState=COMPLETED" in state and "ExitCode=0:0" in state, state + output[-3000:]

    data = results(report)
    run = data["run"]
    assert (run["world_size"], run["launcher"], run["backend"]) == (2, "slurm", "gloo")
    assert run["hosts"] == [slurm_cluster.host]
    assert run["environment"]["SLURM_STEP_NUM_TASKS"] == "2"
    # Per-rank figures from both tasks, and a collective swept across both.
    gemm = [m for m in data["measurements"] if m["metric"] == "gemm.tflops"]
    assert sorted(m["rank"] for m in gemm) == [0, 1] and all(m["value"] > 0 for m in gemm)
    scaling = [(m["params"]["ranks"], m["params"]["span"]) for m in data["measurements"]
               if m["metric"] == "scaling.allreduce_busbw_gbps"]
    assert scaling == [(2, "intra-node")]  # both tasks on the one node
    # Task 0 alone talks to the job's output; task 1 writes to its own log.
    assert output.count("clusterbench summary") == 1
    assert "test session starts" in (report / "logs" / "rank-1.log").read_text()
