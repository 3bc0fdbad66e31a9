"""Slurm hostlist expansion: what `scontrol show hostnames` prints for the same expression."""

import re

import pytest

from clusterbench.hostlist import HostlistError, expand_hostlist, short_name


@pytest.mark.parametrize(
    "expression, hosts",
    [
        ("gpu001", ["gpu001"]),
        ("gpu[001-003]", ["gpu001", "gpu002", "gpu003"]),
        ("n[8-10]", ["n8", "n9", "n10"]),  # the padding is the lower bound's: none here
        ("n[08-10]", ["n08", "n09", "n10"]),
        ("a,b,c", ["a", "b", "c"]),
        ("gpu[1,3,5-6]", ["gpu1", "gpu3", "gpu5", "gpu6"]),
        ("rack[1-2]-node[01-02]", ["rack1-node01", "rack1-node02", "rack2-node01", "rack2-node02"]),
        ("login,gpu[01-02].ib", ["login", "gpu01.ib", "gpu02.ib"]),
        (" x[1-2] , y ", ["x1", "x2", "y"]),
        ("a[1-2],a2,a[2-3]", ["a1", "a2", "a3"]),  # duplicates named once, in first order
    ],
)
def test_expands_like_slurm(expression, hosts):
    assert expand_hostlist(expression) == hosts


def test_sixteen_node_cluster():
    hosts = expand_hostlist("gpu[001-016]")
    assert len(hosts) == 16 and hosts[0] == "gpu001" and hosts[-1] == "gpu016"


@pytest.mark.parametrize(
    "expression, problem",
    [
        ("", "empty"),
        ("gpu[001-003", "never closed"),
        ("gpu001-003]", "without '['"),
        ("gpu[[1-2]]", "nested"),
        ("gpu[3-1]", "runs backwards"),
        ("gpu[a-b]", "not a number or a range"),
        ("gpu[]", "not a number or a range"),
        ("a,,b", "empty host name"),
        ("gpu[1-99999999]", "more than"),
        ("gpu 01", "white space"),
    ],
)
def test_bad_expressions_say_what_is_wrong(expression, problem):
    with pytest.raises(HostlistError, match=re.escape(problem)) as error:
        expand_hostlist(expression)
    assert "\n" not in str(error.value)


def test_short_name_drops_the_domain():
    assert short_name("gpu001.cluster.example.org") == "gpu001" and short_name("gpu001") == "gpu001"
