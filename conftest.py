# The acceptance suite (benchmarks/) runs under the clusterbench plugin. It is loaded here rather
# than through a pytest11 entry point so that installing clusterbench does not change every other
# pytest run in the same environment.
pytest_plugins = ["clusterbench.plugin"]
