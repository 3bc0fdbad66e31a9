"""Acceptance: end-to-end training step time, throughput, MFU and weak-scaling efficiency.

A GPT-style model trains for real (synthetic tokens, AdamW, bf16 autocast on GPUs) at 1, 2, 4, ...
ranks up to the world with the same per-rank batch; under plain pytest the run starts its own local
ranks. The scaling run happens once; each test judges one of its figures. Two rules hold whatever
the profile says: the loss must fall, and every rank must end with identical parameters.
"""

import pytest
from clusterbench.probes.training.table import render_scaling_table

from clusterbench.judge import Scope
from clusterbench.metrics import METRICS
from clusterbench.training_runs import rule_checks

TRAINING_METRICS = [name for name, spec in METRICS.items() if spec.family == "training"]


@pytest.mark.training
@pytest.mark.parametrize("metric", TRAINING_METRICS)
def test_training(acceptance, metric):
    runs = acceptance.run.training
    if not acceptance.is_reporter:
        runs.runs()  # take part in every group this rank belongs to; a failure fails the test here
        acceptance.share(None, lambda _: [])
        acceptance.measure(Scope(metric), [])
        return
    measured = acceptance.measure(Scope(metric), [(runs.location, lambda: runs.figures(metric))])
    acceptance.share(None, lambda _: rule_checks(measured))
    if metric == "train.step_time_ms" and measured:
        plan = runs.plan
        title = (f"training {plan.config.name} ({measured[0].details['parameters'] / 1e6:.2f} M parameters), "
                 f"{plan.dtype}, batch {plan.config.batch} x {plan.config.seq_len} per rank, {plan.parallel}, "
                 f"{runs.backend}, {plan.warmup} warm-up + {plan.steps} measured steps, launcher {acceptance.world.launcher}")
        acceptance.show(render_scaling_table(runs.measurements(), title=title, footer=runs.footer()))
