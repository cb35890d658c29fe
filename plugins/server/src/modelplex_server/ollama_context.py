"""Ollama generate's ``context``: the conversation so far, answered by ``/ollama/api/generate``
and sent back by a client to keep a conversational memory across generate calls.

Ollama's context is the token ids of the templated conversation; modelplex's providers chat,
so here it is the conversation itself: the UTF-8 bytes of ``mpx1`` and a JSON list of
``[role, text]`` turns (system, user, assistant; images are not kept), one integer (0-255) a
byte. :func:`context_of` makes it; :func:`history_of` reads one back (a 400 naming
``context`` for one this server did not make, such as Ollama's token ids). A context holds
only what its client sent and was answered, so reading one back grants nothing: it is a
history, like a chat's ``messages``, bounded by the body limit.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from modelplex.types import ChatMessage, MessageRole
from modelplex_server.errors import ApiError
from modelplex_server.schemas import check_depth

__all__ = ["MAGIC", "context_of", "history_of"]

MAGIC = b"mpx1"
_ROLES = {"system": MessageRole.SYSTEM, "user": MessageRole.USER,
          "assistant": MessageRole.ASSISTANT}
_NAMES = {role: name for name, role in _ROLES.items()}


def context_of(messages: Sequence[ChatMessage], answer: str) -> list[int]:
    """The context of a generate call: its ``messages`` (system, history, prompt) and the
    ``answer``."""
    turns = [[_NAMES[m.role], m.content] for m in messages if m.role in _NAMES and m.content]
    if answer:
        turns.append(["assistant", answer])
    return list(MAGIC + json.dumps(turns, ensure_ascii=False).encode("utf-8", "replace"))


def _refuse(reason: str) -> ApiError:
    return ApiError(400, f"invalid context: {reason}; send back the context a generate of this "
                         "server answered, or none (Ollama's token ids are not understood "
                         "here)", param="context")


def history_of(context: Sequence[int]) -> list[ChatMessage]:
    """The turns of a ``context`` made by :func:`context_of` (a 400 naming ``context`` for
    anything else)."""
    if not context:
        return []
    try:
        raw = bytes(context)
    except ValueError:
        raise _refuse("its numbers are not bytes (0-255)") from None
    if not raw.startswith(MAGIC):
        raise _refuse("it was not made by this server")
    try:
        check_depth(raw[len(MAGIC):], 2)
        turns = json.loads(raw[len(MAGIC):])
    except (ValueError, ApiError):
        raise _refuse("it is damaged") from None
    if not isinstance(turns, list):
        raise _refuse("it is damaged")
    out = []
    for turn in turns:
        if not (isinstance(turn, list) and len(turn) == 2 and turn[0] in _ROLES
                and isinstance(turn[1], str)):
            raise _refuse("it is damaged")
        try:
            out.append(ChatMessage(role=_ROLES[turn[0]], content=turn[1]))
        except ValueError:  # empty, or not valid text
            raise _refuse("it is damaged") from None
    return out
