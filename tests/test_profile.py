"""Profiles: loading, extending, and one clear line for every kind of mistake."""

import pytest

from clusterbench.catalog import resolve_cluster
from clusterbench.errors import ProfileError
from clusterbench.model import Better, Provenance

GOOD = """
[cluster]
name = "prod"
nodes = 16
accelerators_per_node = 8
accelerator = "H200"

[settings]
outlier_tolerance = 0.03

[[expect]]
metric = "gemm.tflops"
params = { dtype = "bf16" }
target = 750
unit = "TFLOP/s"
better = "higher"
tolerance = 0.05
warn = 0.02
provenance = "contract"
source = "purchase agreement, annex B, item 3"
"""


def load(path):
    return resolve_cluster(str(path), path.parent)


def test_good_profile_loads_with_every_field(write_profile):
    profile = load(write_profile(GOOD))
    assert profile.cluster.name == "prod"
    assert (profile.cluster.nodes, profile.cluster.accelerators_per_node) == (16, 8)
    assert profile.settings.outlier_tolerance == 0.03
    e, gpu_count = profile.expectations
    # accelerators_per_node = 8 means every node must show 8 GPUs, stated or not.
    assert (gpu_count.metric, gpu_count.target, gpu_count.tolerance) == ("gpu.count", 8.0, 0.0)
    assert "accelerators_per_node = 8" in gpu_count.source
    assert (e.metric, dict(e.params), e.target, e.unit) == ("gemm.tflops", {"dtype": "bf16"}, 750.0, "TFLOP/s")
    assert e.better is Better.HIGHER and e.provenance is Provenance.CONTRACT
    assert e.fail_threshold == pytest.approx(712.5) and e.warn_threshold == pytest.approx(727.5)
    assert profile.files[0].sha256 and "annex B" in profile.files[0].text


def test_name_lookup_in_profiles_folder(write_profile):
    path = write_profile(GOOD, name="prod")
    assert resolve_cluster("prod", path.parent).cluster.name == "prod"


def test_extends_inherits_and_overrides(write_profile):
    write_profile(GOOD, name="base")
    child = write_profile(
        """
[cluster]
name = "child"
extends = "base"
nodes = 2

[[expect]]
metric = "gemm.tflops"
params = { dtype = "bf16" }
target = 700
unit = "TFLOP/s"
provenance = "baseline"
source = "run 42"

[[expect]]
metric = "memory.copy_gbps"
target = 4000
unit = "GB/s"
provenance = "spec"
source = "datasheet"
""",
        name="child",
    )
    profile = load(child)
    assert profile.cluster.name == "child" and profile.cluster.nodes == 2
    assert profile.cluster.accelerators_per_node == 8  # inherited
    assert profile.settings.outlier_tolerance == 0.03  # inherited
    targets = {e.metric: e.target for e in profile.expectations}
    # bf16 replaced, not duplicated; the node's GPU count is expected from accelerators_per_node.
    assert targets == {"gemm.tflops": 700.0, "memory.copy_gbps": 4000.0, "gpu.count": 8.0}
    assert [f.path.rsplit("/", 1)[-1] for f in profile.files] == ["child.toml", "base.toml"]


def test_expectations_for_matches_params_subset(write_profile):
    profile = load(write_profile(GOOD))
    assert len(profile.expectations_for("gemm.tflops", {"dtype": "bf16"})) == 1
    assert profile.expectations_for("gemm.tflops", {"dtype": "fp16"}) == []
    assert profile.expectations_for("memory.copy_gbps") == []


BAD_CASES = {
    "malformed TOML names the line": ("[cluster\nname='x'", "invalid TOML", "line 1"),
    "unknown top-level section": (GOOD + "\n[clustr]\n", "unknown section 'clustr'", "did you mean 'cluster'"),
    "unknown cluster key": (GOOD.replace("nodes = 16", "node = 16"), "unknown key 'node'", "did you mean 'nodes'"),
    "unknown expect key": (GOOD.replace("tolerance = 0.05", "tolerence = 0.05"), "unknown key 'tolerence'",
                           "'tolerance'"),
    "unknown metric": (GOOD.replace('"gemm.tflops"', '"gemm.tflop"'), "unknown metric 'gemm.tflop'", "'gemm.tflops'"),
    "wrong unit": (GOOD.replace('"TFLOP/s"', '"GFLOP/s"'), "unit 'GFLOP/s' is wrong for gemm.tflops", "'TFLOP/s'"),
    "wrong direction": (GOOD.replace('better = "higher"', 'better = "lower"'), "contradicts gemm.tflops",
                        "higher-is-better"),
    "bad direction word": (GOOD.replace('better = "higher"', 'better = "up"'), "'better' must be 'higher' or 'lower'",
                           ""),
    "negative target": (GOOD.replace("target = 750", "target = -750"), "'target' must be greater than zero", "-750"),
    "target as string": (GOOD.replace("target = 750", 'target = "750"'), "'target' must be a number", "'750'"),
    "target as boolean": (GOOD.replace("target = 750", "target = true"), "'target' must be a number", "True"),
    "tolerance above one": (GOOD.replace("tolerance = 0.05", "tolerance = 5"), "'tolerance' is a fraction", "[0, 1)"),
    "negative warn": (GOOD.replace("warn = 0.02", "warn = -0.02"), "'warn' is a fraction", "-0.02"),
    "unknown provenance": (GOOD.replace('"contract"', '"contrct"'), "provenance 'contrct'", "did you mean 'contract'"),
    "empty source": (GOOD.replace('"purchase agreement, annex B, item 3"', '""'), "'source' must say", ""),
    "missing unit": (GOOD.replace('unit = "TFLOP/s"\n', ""), "missing required key 'unit'", "#1 (gemm.tflops)"),
    "unknown param": (GOOD.replace("dtype =", "dtyp ="), "unknown param 'dtyp'", "did you mean 'dtype'"),
    "unknown dtype": (GOOD.replace('"bf16"', '"bf61"'), "unknown dtype 'bf61'", "valid:"),
    "param on a metric without params": (
        GOOD.replace('"gemm.tflops"', '"memory.copy_gbps"').replace('"TFLOP/s"', '"GB/s"'),
        "unknown param 'dtype' for memory.copy_gbps",
        "valid: none",
    ),
    "expect not an array": ('expect = "x"\n' + GOOD.split("[[expect]]")[0], "must be an array of tables", ""),
    "zero nodes": (GOOD.replace("nodes = 16", "nodes = 0"), "'nodes' must be greater than zero", ""),
    "missing name": (GOOD.replace('name = "prod"\n', ""), "missing required key 'name'", ""),
    "nan target": (GOOD.replace("target = 750", "target = nan"), "finite", ""),
    "unknown settings key": (GOOD.replace("outlier_tolerance", "outlier_tol"), "unknown key 'outlier_tol'",
                             "outlier_tolerance"),
    "unknown golden key": (GOOD + '\n[golden]\ndriver = "550"\n',
                           "[golden]: unknown golden configuration key(s) driver", "driver_version"),
    "bad golden value": (GOOD + '\n[golden]\npcie_width = "x16"\n', "[golden]", "pcie_width"),
    "bad storage ranks": (GOOD + '\n[storage]\nranks = "every"\n',
                          "[storage]: 'ranks' must be one of all, one-per-node", "every"),
    "empty storage targets": (GOOD + '\n[storage]\ntargets = []\n', "'targets' must be a non-empty array", ""),
    "shared not a target": (
        GOOD + '\n[storage]\ntargets = ["/scratch"]\nshared = ["/lustre"]\n', "'shared' names /lustre",
        "not among the targets"
    ),
    "shared not paths": (GOOD + '\n[storage]\nshared = [1]\n', "'shared' must be an array of directory paths", ""),
    "extends unknown": (GOOD.replace('name = "prod"', 'name = "prod"\nextends = "h200-nod"'), "extends 'h200-nod'",
                        "no such profile"),
}


@pytest.mark.parametrize("case", list(BAD_CASES))
def test_bad_profiles_give_one_clear_line(write_profile, case):
    text, *fragments = BAD_CASES[case]
    path = write_profile(text)
    with pytest.raises(ProfileError) as excinfo:
        load(path)
    message = str(excinfo.value)
    assert "\n" not in message
    assert message.startswith(str(path)), message
    for fragment in fragments:
        assert fragment in message, message


def test_extends_cycle_is_reported(write_profile):
    write_profile('[cluster]\nname = "a"\nextends = "b"\n', name="a")
    b = write_profile('[cluster]\nname = "b"\nextends = "a"\n', name="b")
    with pytest.raises(ProfileError, match="cycle"):
        load(b)


def test_unknown_cluster_name_lists_available(write_profile):
    path = write_profile(GOOD, name="prod")
    with pytest.raises(ProfileError) as excinfo:
        resolve_cluster("prd", path.parent)
    message = str(excinfo.value)
    assert "unknown cluster 'prd'" in message and "did you mean 'prod'" in message
    assert "local, prod" in message


def test_missing_path_and_directory(tmp_path):
    with pytest.raises(ProfileError, match="profile file not found"):
        resolve_cluster(str(tmp_path / "nope.toml"), tmp_path)
    folder = tmp_path / "dir.toml"
    folder.mkdir()
    with pytest.raises(ProfileError, match="is a directory"):
        resolve_cluster(str(folder), tmp_path)


def test_shipped_profiles_all_load(repo_root):
    folder = repo_root / "clusters"
    names = [p.stem for p in folder.glob("*.toml")]
    assert names, "the repository ships example profiles"
    for name in names:
        profile = resolve_cluster(name, folder)
        assert profile.expectations, name
        for expectation in profile.expectations:
            assert expectation.source.strip()


def test_hosts_expand_and_set_the_node_count(write_profile):
    profile = load(write_profile(GOOD.replace("nodes = 16", 'hosts = "gpu[001-016]"')))
    assert profile.cluster.nodes == 16 and profile.cluster.host_names()[:2] == ["gpu001", "gpu002"]


def test_hosts_that_contradict_nodes_are_one_clear_line(write_profile):
    with pytest.raises(ProfileError, match=r"'hosts' names 15 hosts but 'nodes' = 16") as error:
        load(write_profile(GOOD.replace("nodes = 16", 'nodes = 16\nhosts = "gpu[001-015]"')))
    assert "\n" not in str(error.value)


def test_a_bad_hostlist_is_one_clear_line(write_profile):
    with pytest.raises(ProfileError, match=r"\[cluster\]: 'hosts' is not a Slurm hostlist .*never closed"):
        load(write_profile(GOOD.replace("nodes = 16", 'hosts = "gpu[001-016"')))


def test_a_child_host_list_overrides_the_parents_one_node(write_profile):
    """h200-node says nodes = 1 (one node of hardware); a cluster extending it names its 16 hosts."""
    write_profile(GOOD.replace("nodes = 16", "nodes = 1"), name="base")
    child = write_profile('[cluster]\nname = "prod"\nextends = "base"\nhosts = "gpu[01-16]"\n', name="prod")
    assert load(child).cluster.nodes == 16
