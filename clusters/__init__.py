"""The cluster profiles shipped with clusterbench (installed as clusterbench.profiles, package data).

A user's own profiles folder (--profiles-dir, $CLUSTERBENCH_PROFILES, then ./clusters) is searched first.
"""
