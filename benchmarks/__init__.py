"""The acceptance suite, installed as clusterbench.benchmarks (`pytest --cluster=NAME` runs it from any directory).

A package so that its test modules import under one unambiguous name: a site's own test_compute.py
in the current directory must not collide with ours. Unlike probes/ and reports/ it does not refuse
its top-level name: run from the checkout, pytest imports these files as `benchmarks.test_*` (the
first folder above them without an __init__.py is the checkout root), and each still loads once,
since nothing imports them as clusterbench.benchmarks.test_*.
"""
