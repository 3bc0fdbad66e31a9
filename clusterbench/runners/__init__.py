"""Orchestration of an acceptance run's probes: which ranks measure, in which process groups, and once.

    runner       the protocol: measure once and remember a failure (Runner), over the launcher's world
                 or over local ranks started here (WorldRunner.on_every_rank)
    local_ranks  starting N local ranks of a fresh process group, with a deadline, nothing left behind
    devices      the torch device of a rank
    groups       node leaders, scaling groups, and subgroups made with the run's deadline
    collectives  the collective sweeps, scaling groups and pairwise node test
    training     the training scaling ladder
    storage      the storage targets, and the shared checkpoint group

Nothing here is imported by this package itself: most of it needs torch, which only a run imports.
"""
