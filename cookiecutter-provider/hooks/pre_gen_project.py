"""Refuse a provider name that cannot be a Python package and entry-point name."""

import re
import sys

NAME = "{{ cookiecutter.provider_name }}"

if not re.fullmatch(r"[a-z][a-z0-9-]*[a-z0-9]", NAME):
    print(f"ERROR: provider_name {NAME!r} must be lower case letters, digits and dashes, "
          "starting with a letter (e.g. 'acme' or 'acme-cloud')")
    sys.exit(1)
