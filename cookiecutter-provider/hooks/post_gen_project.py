"""Remove what this wire format does not use: the test upstream's wire of a custom API."""

from pathlib import Path

if "{{ cookiecutter.wire_format }}" != "sse-no-end":
    Path("tests", "upstream_wire.py").unlink()
