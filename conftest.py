"""In the repo checkout the acceptance suite (benchmarks/) runs under the clusterbench plugin with or
without --cluster (default: local), as it always has. Elsewhere the pytest11 entry point
(clusterbench.options) loads the plugin only when --cluster is given, so that installing
clusterbench does not change every other pytest run in the same environment.

Registered from a hook rather than through `pytest_plugins`: pytest refuses `pytest_plugins` in a
conftest that is not at the rootdir, and this one is not when an editable install runs the suite
(benchmarks/) from another directory.
"""

from clusterbench import plugin as _clusterbench_plugin


def pytest_addhooks(pluginmanager) -> None:
    if not pluginmanager.is_registered(_clusterbench_plugin):
        pluginmanager.register(_clusterbench_plugin, "clusterbench.plugin")
