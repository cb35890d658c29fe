"""The version of modelplex-server."""

__version__ = "0.1.0"
