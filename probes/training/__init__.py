"""Training probe: a GPT-style model trained for real, timed per step, at 1, 2, 4, ... ranks.

Its figures are declared here (the modules beside it measure them): step time, throughput, MFU and
weak-scaling efficiency are each judged at the ladder's largest rung unless an expectation names
`ranks`; the loss must fall and every rank's parameters must end bit-identical.
"""

from clusterbench.registry import declare_probe, metric

# What a training figure was measured with; `span` is single, intra-node or inter-node.
PARAMS = ("preset", "ranks", "span", "dtype", "batch", "seq_len", "parallel")
# (metric, unit, better, description); each judged at the ladder's largest rung unless an
# expectation names `ranks`.
LADDER_FIGURES = (
    ("train.step_time_ms", "ms", "lower",
     "median training step time, each step the slowest rank's (data generation apart)"),
    ("train.tokens_per_s", "tokens/s", "higher",
     "global training throughput: ranks x batch x seq_len / median step time"),
    ("train.mfu", "fraction", "higher",
     "model FLOPs utilisation per device: (6N + 12LHQT) x tokens/s per device / dense peak"),
    ("train.scaling_efficiency", "fraction", "higher",
     "weak-scaling efficiency X_N / (N * X_1), the same per-rank batch at N ranks and at 1"),
    ("train.loss_drop", "fraction", "higher",
     "relative loss decrease over the measured steps (first fifth vs last fifth)"),
)
PROBE = declare_probe(
    "training", per="world", module=__name__,
    settings=("training_preset", "training_parallel", "collective_timeout_s", "local_ranks",
              "[cluster] price_per_accelerator_hour"),
    metrics=[
        *(metric(name, unit, better, "training", description, PARAMS, judged_at_max="ranks")
          for name, unit, better, description in LADDER_FIGURES),
        metric("train.cost_per_mtokens", "cost/Mtokens", "lower", "training",
               "cost of a million training tokens at the profile's price per accelerator-hour",
               (*PARAMS, "currency"), judged_at_max="ranks"),
        metric("train.params_mismatched", "count", "lower", "training",
               "ranks whose parameters differ from the first rank's after the measured steps (checksum)", PARAMS),
        # Judged against zero whatever the profile says by clusterbench.judge.training.rule_checks,
        # whose message names the ranks (a generic must_be_zero check would speak of a collective).
    ],
)
