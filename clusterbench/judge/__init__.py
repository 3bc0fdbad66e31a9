"""The judge: compare measurements with expectations, with their peers or with history, and give verdicts.

The judge measures nothing and renders nothing; it only turns data into `Check`s. Every `Check` of a
run is made in this package.
"""

from clusterbench.judge.burnin import burnin_checks
from clusterbench.judge.cluster import CLUSTER_HOSTS_METRIC, CLUSTER_NODES_METRIC, judge_cluster
from clusterbench.judge.expectations import (
    Scope,
    aggregate_ranks,
    judge_exact,
    judge_measurement,
    judged_measurements,
    not_measured,
)
from clusterbench.judge.formatting import format_value
from clusterbench.judge.golden import GOLDEN_KEYS, check_golden, find_outliers, validate_golden
from clusterbench.judge.health import finding_check, inventory_checks
from clusterbench.judge.health_rules import HealthFinding, health_findings, lost_gpu_findings
from clusterbench.judge.p2p import copy_matrix_checks
from clusterbench.judge.pairwise import pairwise_check
from clusterbench.judge.passive_health import ib_counter_checks, xid_checks
from clusterbench.judge.peers import PeerStanding, PeerYardstick, judge_peers, peer_standings, z_cut_off
from clusterbench.judge.regression import SUMMARY_METRIC, judge_regressions, not_compared, threshold_basis
from clusterbench.judge.second_opinion import compare_busbw, dcgm_result_checks, second_opinion_checks
from clusterbench.judge.training import rule_checks

__all__ = [
    "burnin_checks", "copy_matrix_checks", "ib_counter_checks", "xid_checks",
    "compare_busbw", "dcgm_result_checks", "second_opinion_checks",
    "CLUSTER_HOSTS_METRIC", "CLUSTER_NODES_METRIC", "judge_cluster",
    "Scope", "aggregate_ranks", "judge_exact", "judge_measurement", "judged_measurements", "not_measured",
    "format_value",
    "GOLDEN_KEYS", "check_golden", "find_outliers", "validate_golden",
    "finding_check", "inventory_checks",
    "HealthFinding", "health_findings", "lost_gpu_findings",
    "pairwise_check",
    "PeerStanding", "PeerYardstick", "judge_peers", "peer_standings", "z_cut_off",
    "SUMMARY_METRIC", "judge_regressions", "not_compared", "threshold_basis",
    "rule_checks",
]
