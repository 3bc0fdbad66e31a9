"""The training tests of the acceptance suite end to end: `pytest -m training --quick` on this CPU,
with local ranks (the profile's local_ranks = 2), a price and a scaling efficiency floor."""

from __future__ import annotations

from test_acceptance_run import run_suite

PROFILE = """
[cluster]
name = "cpu-training"
price_per_accelerator_hour = 2.5
currency = "USD"

[settings]
local_ranks = 2
collective_timeout_s = 60

[[expect]]
metric = "train.scaling_efficiency"
target = 0.01
unit = "fraction"
tolerance = 0.5
provenance = "baseline"
source = "test fixture: a floor any shared CPU meets"
"""


def test_training_scales_over_local_ranks_and_is_judged(tmp_path):
    profile = tmp_path / "cpu-training.toml"
    profile.write_text(PROFILE)
    run = run_suite(tmp_path, f"--cluster={profile}", "-m", "training", timeout=240)
    assert run.returncode == 0, run.stdout + run.stderr
    figures = {(m["metric"], m["params"]["ranks"]): m for m in run.results["measurements"]}
    assert {ranks for metric, ranks in figures if metric == "train.step_time_ms"} == {1, 2}
    step = figures[("train.step_time_ms", 2)]
    assert step["params"]["preset"] == "tiny" and step["params"]["span"] == "intra-node" and len(step["samples"]) == 10
    assert step["details"]["p90_ms"] >= step["value"] > 0 and step["details"]["data_ms"]["median"] > 0
    assert figures[("train.cost_per_mtokens", 2)]["params"]["currency"] == "USD"
    checks = {(c["metric"], c["params"]["ranks"]): c for c in run.checks()}
    efficiency = checks[("train.scaling_efficiency", 2)]
    assert efficiency["verdict"] == "PASS" and efficiency["provenance"] == "baseline"
    assert checks[("train.params_mismatched", 2)]["verdict"] == "PASS"
    assert checks[("train.loss_drop", 1)]["verdict"] == checks[("train.loss_drop", 2)]["verdict"] == "PASS"
    outcomes = {t["nodeid"].split("::")[-1]: t for t in run.results["tests"]}
    assert outcomes["test_training[train.mfu]"]["verdict"] == "NOT MEASURED"
    assert "# ranks       span   step ms" in run.stdout
    assert "largest scale meeting the efficiency floor 0.005" in run.stdout and ": 2 ranks" in run.stdout
