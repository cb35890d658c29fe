"""``POST /v1/files`` against malformed and hostile multipart forms, sent raw (as no
official client would): each is a 400/415 naming the field and the fix, never a 500."""

from __future__ import annotations

import aiohttp
import pytest

from modelplex_server.app import AppServer

BOUNDARY = "zz"


def raw_form(*parts: tuple[str, str | None, bytes]) -> bytes:
    """A multipart body of ``(name, filename, content)`` parts."""
    out = b""
    for name, filename, content in parts:
        extra = f'; filename="{filename}"' if filename is not None else ""
        out += (f"--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"{name}\"{extra}"
                "\r\n\r\n").encode() + content + b"\r\n"
    return out + f"--{BOUNDARY}--\r\n".encode()


MULTIPART = f"multipart/form-data; boundary={BOUNDARY}"


@pytest.mark.parametrize(("body", "content_type", "status", "param", "says"), [
    (b"--x\r\nabc", "multipart/form-data", 400, "file", "boundary"),
    (b"garbage", MULTIPART, 400, "file", "malformed"),
    (b"", MULTIPART, 400, "file", "malformed"),
    (raw_form(("purpose", None, b"batch"), ("file", "a/../" + "p" * 10_000, b"{}\n")),
     MULTIPART, 400, "file", "8 KiB"),
    (raw_form(("purpose", None, b"batch"), ("file", "a.jsonl", b"{}\n"),
              ("file", "b.jsonl", b"{}\n")), MULTIPART, 400, "file", "more than one 'file'"),
    (raw_form(("purpose", None, b"x" * 100), ("file", "a.jsonl", b"{}\n")),
     MULTIPART, 400, "purpose", "purpose=batch"),
    (b"purpose=batch", "application/x-www-form-urlencoded", 415, "file", "multipart"),
])
async def test_a_malformed_upload_is_a_clear_error(
        server: AppServer, body: bytes, content_type: str, status: int, param: str,
        says: str) -> None:
    async with aiohttp.ClientSession() as session, session.post(
            server.url + "/v1/files", data=body,
            headers={"Content-Type": content_type}) as resp:
        assert resp.status == status, await resp.text()
        error = (await resp.json())["error"]
    assert error["param"] == param and says in error["message"]
    async with aiohttp.ClientSession() as session, session.get(
            server.url + "/v1/files") as listed:
        assert (await listed.json())["data"] == []  # nothing was kept
