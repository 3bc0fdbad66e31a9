"""Acceptance: end-to-end training step time, throughput, MFU and weak-scaling efficiency.

A GPT-style model trains for real (synthetic tokens, AdamW, bf16 autocast on GPUs) at 1, 2, 4, ...
ranks up to the world with the same per-rank batch; under plain pytest the run starts its own local
ranks. The scaling run happens once; each test judges one of its figures. Two rules hold whatever
the profile says: the loss must fall, and every rank must end with identical parameters.
"""

import pytest

from clusterbench.judge import rule_checks
from clusterbench.probes import training
from clusterbench.reports.training_table import render_scaling_table


@pytest.mark.training
@pytest.mark.parametrize("metric", training.PROBE.metric_names)
def test_training(acceptance, metric):
    runs = acceptance.runners.training
    measured = acceptance.measure(metric, lambda: runs.figures(metric))
    acceptance.also_judge(rule_checks)
    if metric == "train.step_time_ms" and measured:
        plan = runs.plan
        title = (f"training {plan.config.name} ({measured[0].details['parameters'] / 1e6:.2f} M parameters), "
                 f"{plan.dtype}, batch {plan.config.batch} x {plan.config.seq_len} per rank, {plan.parallel}, "
                 f"{runs.backend}, {plan.warmup} warm-up + {plan.steps} measured steps, launcher "
                 f"{acceptance.world.launcher}")
        acceptance.show(render_scaling_table(runs.measurements(), title=title, footer=runs.footer()))
