"""The acceptance suite, installed as clusterbench.benchmarks (`pytest --cluster=NAME` runs it from any directory).

A package so that its test modules import under one unambiguous name: a site's own test_compute.py
in the current directory must not collide with ours.
"""
