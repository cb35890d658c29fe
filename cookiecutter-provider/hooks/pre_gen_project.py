"""Refuse a provider name that cannot be a Python package and entry-point name."""

import re
import sys

NAME = "{{ cookiecutter.provider_name }}"

if not re.fullmatch(r"[a-z][a-z0-9-]*[a-z0-9]", NAME):
    print(f"ERROR: provider_name {NAME!r} must be lower case letters, digits and dashes, "
          "starting with a letter (e.g. 'acme' or 'acme-cloud')")
    sys.exit(1)

if "{{ cookiecutter.wire_format }}" == "sse-no-end" and "{{ cookiecutter.embeddings }}" == "yes":
    print("ERROR: the sse-no-end wire format has no embeddings template (each API of this "
          "kind embeds its own way): answer embeddings=no and add embed() by hand "
          "(docs/writing-a-provider.md shows how)")
    sys.exit(1)
for variable in ("{{ cookiecutter.api_key_env }}", "{{ cookiecutter.base_url_env }}"):
    if not re.fullmatch(r"[A-Z_][A-Z0-9_]*", variable):
        print(f"ERROR: {variable!r} is not an environment variable name (upper case letters, "
              "digits and underscores, e.g. ACME_API_KEY)")
        sys.exit(1)
