"""Images a client sends are data, never paths on the server: an image given as a file path
(``/etc/hostname``, ``~/.ssh/id_rsa``) on any API is a 400 naming the field, and the
server's file never reaches the upstream (the core's wires read paths for local callers; a
remote client must not make the server read its own files); a bad content block is named by
what is wrong with it."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from modelplex.testing.upstream import FaultyUpstream
from modelplex_server.app import AppServer

SECRET = b"\x89PNG\r\n\x1a\n-server-secret-file-"
M = "fault:fault"


def bodies(path: str) -> list[tuple[str, dict[str, Any]]]:
    """The same path as an image on each API."""
    return [
        ("/v1/chat/completions", {"model": M, "messages": [{"role": "user", "content": [
            {"type": "text", "text": "x"}, {"type": "image_url", "image_url": {"url": path}}]}]}),
        ("/v1/responses", {"model": M, "input": [{"role": "user", "content": [
            {"type": "input_image", "image_url": path}]}]}),
        ("/v1/messages", {"model": M, "max_tokens": 5, "messages": [{"role": "user", "content": [
            {"type": "image", "source": {"type": "base64", "media_type": "image/png",
                                         "data": path}}]}]}),
        ("/ollama/api/chat", {"model": M, "stream": False, "messages": [
            {"role": "user", "content": "x", "images": [path]}]}),
        ("/ollama/api/generate", {"model": M, "stream": False, "prompt": "x", "images": [path]}),
    ]


@pytest.mark.parametrize("api", range(5), ids=["chat", "responses", "messages", "ollama-chat",
                                               "ollama-generate"])
async def test_a_server_file_path_is_not_read(server: AppServer, upstream: FaultyUpstream,
                                              tmp_path: Path, api: int) -> None:
    secret = tmp_path / "secret.png"
    secret.write_bytes(SECRET)
    path, body = bodies(str(secret))[api]
    async with aiohttp.ClientSession() as session, session.post(
            server.url + path, json=body) as resp:
        text = await resp.text()
    assert resp.status == 400, text
    assert "image" in text and "base64" in text
    encoded = base64.b64encode(SECRET).decode()
    assert not any(encoded in json.dumps(r.json) for r in upstream.received)


@pytest.mark.parametrize("api", range(5), ids=["chat", "responses", "messages", "ollama-chat",
                                               "ollama-generate"])
async def test_base64_and_data_images_still_reach_the_upstream(
        server: AppServer, upstream: FaultyUpstream, api: int) -> None:
    data = base64.b64encode(b"\x89PNG\r\n\x1a\n" + b"\0" * 32).decode()
    image = data if api >= 2 else f"data:image/png;base64,{data}"
    path, body = bodies(image)[api]
    async with aiohttp.ClientSession() as session, session.post(
            server.url + path, json=body) as resp:
        assert resp.status == 200, await resp.text()
    assert data in json.dumps(upstream.received[-1].json)


@pytest.mark.parametrize(("block", "says"), [
    ({"type": "weird"}, "'messages.0.content.0': Input tag 'weird'"),
    ({"type": "image", "source": {"type": "url", "url": "https://x"}},
     "'messages.0.content.0.image.source.type': Input should be 'base64'"),
    ({"type": "text"}, "'messages.0.content.0.text.text' is required"),
])
async def test_a_bad_content_block_is_named_not_called_a_string(
        server: AppServer, block: dict[str, Any], says: str) -> None:
    """A list of content blocks with a bad block: the error names the block and what is wrong
    (was "invalid 'messages.0.content.str': Input should be a valid string")."""
    body = {"model": M, "max_tokens": 5, "messages": [{"role": "user", "content": [block]}]}
    async with aiohttp.ClientSession() as session, session.post(
            server.url + "/v1/messages", json=body) as resp:
        assert resp.status == 400
        message = (await resp.json())["error"]["message"]
    assert says in message and ".str" not in message and "tagged-union" not in message

