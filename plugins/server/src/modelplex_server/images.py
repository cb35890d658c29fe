"""Images a client sends, made safe for the core: an ``http(s)`` URL (passed to the provider
as it is) or a ``data:`` URI of checked base64, never anything else.

The core's wires accept a *file path* as an image (a convenience for local callers); a
string from a remote client that happened to name a file on the server (``/etc/hostname``,
``~/.ssh/id_rsa``) would make the server read it and send it upstream. Every API's images go
through :func:`client_image` first, which also keeps them as data URIs in stored history.
:func:`check_image_count` bounds how many one request holds (each is bounded by the body's
size): OpenAI's 500 on its APIs, Anthropic's 100 on the others.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Sequence

from modelplex.types import ChatMessage
from modelplex_server.errors import ApiError

__all__ = ["ANTHROPIC_IMAGES", "OPENAI_IMAGES", "check_image_count", "client_image"]

#: images one request may hold: OpenAI's limit (its two APIs), Anthropic's (every other API)
OPENAI_IMAGES, ANTHROPIC_IMAGES = 500, 100


def check_image_count(messages: Sequence[ChatMessage], most: int, param: str) -> None:
    """A 400 naming ``param`` when ``messages`` hold more than ``most`` images."""
    count = sum(len(m.images) for m in messages)
    if count > most:
        raise ApiError(400, f"{param}: at most {most} images are taken per request (got "
                            f"{count}): send fewer, or split the request", param=param)


def client_image(value: str, field: str, media_type: str = "image/png") -> str:
    """``value`` (a URL, a data URI or base64 text) as a URL or a base64 data URI; a 400 naming
    ``field`` otherwise. ``media_type`` is the type of bare base64."""
    text = value.strip()
    if text.startswith(("http://", "https://")):
        return text
    if text.startswith("data:"):
        header, _, data = text.partition(",")
        if not header.startswith("data:image/") or not header.endswith(";base64") \
                or not _is_base64(data):
            raise ApiError(400, f"{field}: a data URI image must be an image type in base64 "
                                "(data:image/png;base64,...)", param=field)
        return f"{header},{data}"
    if not _is_base64(text):
        raise ApiError(400, f"{field}: an image must be base64 data, a data URI "
                            "(data:image/png;base64,...) or an http(s) URL (this server does "
                            "not read files)", param=field)
    return f"data:{media_type};base64,{text}"


def _is_base64(text: str) -> bool:
    if not text:
        return False
    try:
        base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return False
    return True
