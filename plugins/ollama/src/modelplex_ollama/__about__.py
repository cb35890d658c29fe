"""The version of modelplex-ollama."""

__version__ = "0.1.0"
