"""The version of the ``modelplex`` distribution (read by hatch when building)."""

__version__ = "0.1.0"
