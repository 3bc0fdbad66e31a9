"""The deployment files in deploy/ are well formed and agree with themselves.

No Kubernetes cluster runs in CI, so the manifests are checked against the fields their schemas
require (Kubernetes API reference for Job, Service and PodSpec; the Kubeflow training operator's
PyTorchJob v1) and for the consistency a typo would break: node counts, GPU counts, the DNS name
of the rendezvous pod. The sbatch recipe is run for real under Slurm in tests/multinode/test_slurm.py.
"""

from __future__ import annotations

import re
import shlex
import subprocess
from pathlib import Path

import pytest

yaml = pytest.importorskip("yaml", reason="pyyaml is in the test extras: pip install -e '.[test]'")

DEPLOY = Path(__file__).resolve().parents[1] / "deploy"
DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


def load(name: str) -> list[dict]:
    docs = [doc for doc in yaml.safe_load_all((DEPLOY / "kubernetes" / name).read_text()) if doc is not None]
    for doc in docs:
        assert {"apiVersion", "kind", "metadata"} <= doc.keys(), doc.keys()
        assert DNS_LABEL.match(doc["metadata"]["name"])
    return docs


def option(command: list[str], name: str) -> str:
    values = [arg.split("=", 1)[1] for arg in command if arg.startswith(f"{name}=")]
    assert len(values) == 1, f"{name} given {len(values)} times in {command}"
    return values[0]


def check_pod_spec(spec: dict) -> dict:
    """The PodSpec fields Kubernetes requires, and what clusterbench needs of them. Returns the container."""
    containers = spec["containers"]
    assert len(containers) == 1
    container = containers[0]
    assert DNS_LABEL.match(container["name"]) and container["image"]
    for variable in container.get("env", []):
        assert DNS_LABEL.match(variable["name"].lower().replace("_", "-"))
        assert ("value" in variable) != ("valueFrom" in variable), variable
    env = {v["name"]: v for v in container["env"]}
    assert env["CLUSTERBENCH_NODE_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "spec.nodeName"
    volumes = {v["name"] for v in spec.get("volumes", [])}
    assert {m["name"] for m in container.get("volumeMounts", [])} <= volumes
    assert all(m["mountPath"].startswith("/") for m in container["volumeMounts"])
    command = container["command"] + container.get("args", [])
    assert command[0] == "torchrun" and "pytest" in command
    assert any(arg.startswith("--cluster=") for arg in command)
    assert any(arg.startswith("--report-dir=/reports/") for arg in command)
    assert any(m["mountPath"] == "/reports" for m in container["volumeMounts"])
    return container


def test_pytorchjob_has_the_fields_the_training_operator_requires():
    (job,) = load("pytorchjob.yaml")
    assert (job["apiVersion"], job["kind"]) == ("kubeflow.org/v1", "PyTorchJob")
    replicas = job["spec"]["pytorchReplicaSpecs"]
    assert set(replicas) <= {"Master", "Worker"} and replicas["Master"]["replicas"] == 1
    for spec in replicas.values():
        assert spec["restartPolicy"] in {"Always", "OnFailure", "Never", "ExitCode"}
        assert isinstance(spec["replicas"], int) and spec["replicas"] >= 1
        container = check_pod_spec(spec["template"]["spec"])
        assert container["name"] == "pytorch"  # the operator finds the container by this name
        # torchrun takes nnodes/node rank/master from the operator's PET_* variables: none given here.
        assert not any(arg.startswith(("--nnodes", "--node-rank", "--master-addr")) for arg in container["command"])
        assert str(container["resources"]["limits"]["nvidia.com/gpu"]) == str(job["spec"]["nprocPerNode"])


def test_indexed_job_meets_at_pod_zero_through_its_headless_service():
    service, job = load("indexed-job.yaml")
    assert (service["apiVersion"], service["kind"], job["apiVersion"], job["kind"]) == ("v1", "Service", "batch/v1",
                                                                                        "Job")
    spec = job["spec"]
    assert spec["completionMode"] == "Indexed" and spec["completions"] == spec["parallelism"]
    pod = spec["template"]["spec"]
    assert pod["restartPolicy"] in {"Never", "OnFailure"}  # a Job's pods may not restart Always
    container = check_pod_spec(pod)
    command = container["command"]
    assert int(option(command, "--nnodes")) == spec["completions"]
    assert option(command, "--nproc-per-node") == str(container["resources"]["limits"]["nvidia.com/gpu"])
    # Pod i of an Indexed Job is named <job>-i; with the subdomain, DNS resolves <job>-0.<service>.
    assert service["spec"]["clusterIP"] == "None" and pod["subdomain"] == service["metadata"]["name"]
    assert option(command, "--master-addr") == f"{job['metadata']['name']}-0.{service['metadata']['name']}"
    assert service["spec"]["selector"].items() <= spec["template"]["metadata"]["labels"].items()
    port = int(option(command, "--master-port"))
    assert port in {p["port"] for p in service["spec"]["ports"]}
    assert option(command, "--node-rank") == "$(NODE_RANK)"
    env = {v["name"]: v for v in container["env"]}
    path = env["NODE_RANK"]["valueFrom"]["fieldRef"]["fieldPath"]
    assert path == "metadata.annotations['batch.kubernetes.io/job-completion-index']"


def test_sbatch_recipe_is_valid_bash_with_one_srun_line():
    recipe = DEPLOY / "slurm" / "clusterbench.sbatch"
    checked = subprocess.run(["bash", "-n", str(recipe)], check=False, capture_output=True, text=True)
    assert checked.returncode == 0, checked.stderr
    lines = recipe.read_text().splitlines()
    assert lines[0] == "#!/bin/bash"
    directives = dict((line.removeprefix("#SBATCH ") + "=").split("=")[:2]
                      for line in lines if line.startswith("#SBATCH "))
    assert {"--nodes", "--ntasks-per-node", "--gpus-per-task"} <= directives.keys()
    assert directives["--gpus-per-task"] == "1"  # one rank per GPU, as clusterbench lays ranks out
    sruns = [shlex.split(line) for line in lines if line.startswith("srun ")]
    assert len(sruns) == 1
    srun = sruns[0]
    assert srun[srun.index("python"):srun.index("python") + 3] == ["python", "-m", "pytest"]
    assert "--kill-on-bad-exit=0" in srun  # rank 0 must outlive a failed rank to write the report
