"""clusterbench: judge an AI cluster's measured performance against its profile, from pytest."""

__version__ = "0.1.0"
