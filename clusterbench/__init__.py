"""clusterbench: judge an AI cluster's measured performance against its profile, from pytest.

What a site's own acceptance test needs (docs/writing-tests.md): `register_metric` in its
conftest.py, the `acceptance` fixture in its tests, `NotMeasured` to say why a figure cannot be had.
"""

from clusterbench.model import Location, Measurement, NotMeasured
from clusterbench.registry import register_metric

__version__ = "0.1.0"

__all__ = ["Location", "Measurement", "NotMeasured", "register_metric", "__version__"]
