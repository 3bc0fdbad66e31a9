"""The pairwise node test's pairing and blame, on synthetic bandwidths."""

from clusterbench.judge.node_pairs import PairResult, blame, second_pass_pairs, slow_pairs
from clusterbench.runners.groups import first_pass_pairs


def results(figures, round_=1):
    return [PairResult(pair, value, round_) for pair, value in figures.items()]


def test_first_pass_pairs_every_node_once_and_the_odd_one_out_with_the_first():
    assert first_pass_pairs(["a", "b", "c", "d"]) == [("a", "b"), ("c", "d")]
    assert first_pass_pairs(["a", "b", "c"]) == [("a", "b"), ("c", "a")]
    assert first_pass_pairs(["a"]) == []


FIRST = results({("n1", "n2"): 45.0, ("n3", "n4"): 46.0, ("n5", "n6"): 20.0, ("n7", "n8"): 44.0})


def test_slow_pair_is_only_a_suspect_and_is_re_paired_with_good_nodes():
    assert [r.pair for r in slow_pairs(FIRST, 0.1)] == [("n5", "n6")]
    assert second_pass_pairs(FIRST, 0.1) == [("n5", "n1"), ("n6", "n2")]


def test_second_pass_blames_the_slow_node_not_its_partner():
    second = results({("n5", "n1"): 19.0, ("n6", "n2"): 45.5}, 2)
    verdicts = {b.subject: b for b in blame(FIRST, second, 0.1)}
    assert verdicts["n5"].slow and "again with good partner n1" in verdicts["n5"].message
    assert not verdicts["n6"].slow and "cleared" in verdicts["n6"].message
    assert not any(b.is_link for b in verdicts.values())


def test_both_ends_fast_elsewhere_blames_the_link():
    second = results({("n5", "n1"): 44.0, ("n6", "n2"): 45.0}, 2)
    slow = [b for b in blame(FIRST, second, 0.1) if b.slow]
    assert [(b.subject, b.is_link) for b in slow] == [("n5<->n6", True)]


def test_nothing_slow_blames_nobody():
    even = results({("a", "b"): 45.0, ("c", "d"): 44.0})
    assert second_pass_pairs(even, 0.1) == [] and blame(even, [], 0.1) == []


def test_slowness_shared_by_most_pairs_is_the_fabric_not_a_node():
    # The median is the yardstick: when most pairs are slow, none stands out. Catching that is the
    # job of the profile's busbw expectation, not of the blame rule.
    first = results({("a", "b"): 10.0, ("c", "d"): 10.0, ("e", "f"): 45.0})
    assert slow_pairs(first, 0.1) == [] and blame(first, [], 0.1) == []
