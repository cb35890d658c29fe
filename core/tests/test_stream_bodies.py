"""Stream bodies that are not the event stream asked for, and error pages (the kit's part).

A server or a proxy in front of it may answer a stream request with plain JSON (an error
object with HTTP 200, or a whole answer) or an HTML page; error bodies may be HTML pages.
"""

from __future__ import annotations

from typing import Any

import pytest
from aioresponses import aioresponses

from modelplex.errors import ServerError, StreamError
from modelplex.http import HttpClient, extract_error_message, plain_text
from modelplex.streams import sse_json

URL = "http://upstream.test"
NGINX_502 = ("<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n<center>"
             "<h1>502 Bad Gateway</h1></center>\r\n<hr><center>nginx/1.25.3</center>\r\n"
             "</body>\r\n</html>\r\n")
CLOUDFLARE = ("<!DOCTYPE html>\n<!--[if lt IE 7]> <html class=\"no-js\"> <![endif]-->\n"
              "<html lang=\"en-US\"><head><title>Attention Required! | Cloudflare</title>"
              "<style>body{margin:0}</style><script>var x = '<b>';</script></head><body>"
              "<h1>Sorry, you have been blocked</h1><p>You are unable to access "
              "api.example.com</p></body></html>")


async def _read(mock: aioresponses, body: str, **kw: Any) -> list[tuple[str | None, Any]]:
    mock.post(URL + "/s", body=body, headers={"Content-Type": kw.pop("ctype",
                                                                       "text/event-stream")})
    http = HttpClient(URL, provider="t")
    try:
        async with http.stream("POST", "/s", {}) as resp:
            return [e async for e in sse_json(resp, provider="t", **kw)]
    finally:
        await http.aclose()


def test_html_error_pages_become_their_text() -> None:
    assert extract_error_message(NGINX_502).startswith("502 Bad Gateway nginx/1.25.3 (an HTML")
    text = extract_error_message(CLOUDFLARE)
    assert text.startswith("Attention Required! | Cloudflare: Sorry, you have been blocked")
    assert "margin" not in text and "var x" not in text and "<" not in text
    assert extract_error_message("Internal Server Error") == "Internal Server Error"
    assert plain_text("x" * 900) == "x" * 500
    assert len(extract_error_message("<html><body>" + "word " * 1000)) <= 500


async def test_html_error_status_names_the_page(mock: aioresponses) -> None:
    mock.post(URL + "/s", status=502, body=NGINX_502, headers={"Content-Type": "text/html"})
    http = HttpClient(URL, provider="t")
    try:
        with pytest.raises(ServerError, match=r"HTTP 502: 502 Bad Gateway nginx/1\.25\.3 "
                                              r"\(an HTML page") as info:
            async with http.stream("POST", "/s", {}):
                pass
    finally:
        await http.aclose()
    assert "<center>" not in str(info.value)


@pytest.mark.parametrize("body", [
    '{"error":{"message":"upstream busy, try later","type":"server_error"}}',
    # pretty-printed, as several gateways send it
    '{\n  "error": {\n    "message": "upstream busy, try later",\n    "code": 503\n  }\n}\n'])
async def test_a_json_error_instead_of_a_stream_raises_it(mock: aioresponses,
                                                          body: str) -> None:
    with pytest.raises(StreamError, match="upstream busy, try later"):
        await _read(mock, body, ctype="application/json")


async def test_a_whole_json_answer_is_yielded_like_an_event(mock: aioresponses) -> None:
    events = await _read(mock, '{"choices":[{"message":{"content":"Hi"}}]}',
                         ctype="application/json", require_end=False)
    assert events == [(None, {"choices": [{"message": {"content": "Hi"}}]})]


async def test_an_html_page_instead_of_a_stream_is_shown(mock: aioresponses) -> None:
    with pytest.raises(StreamError, match=r"not an event stream.*Sorry, you have been "
                                          r"blocked") as info:
        await _read(mock, CLOUDFLARE, ctype="text/html")
    assert "ended before" not in str(info.value)


async def test_sse_under_a_json_content_type_still_reads(mock: aioresponses) -> None:
    events = await _read(mock, 'data: {"a":1}\n\nid: 7\nretry: 10\ndata: {"a":2}\n\n'
                               "data: [DONE]\n\n", ctype="application/json")
    assert [obj for _, obj in events] == [{"a": 1}, {"a": 2}]


async def test_a_cut_stream_still_says_so(mock: aioresponses) -> None:
    with pytest.raises(StreamError, match="ended before the answer was finished"):
        await _read(mock, 'data: {"a":1}\n\n')


async def test_an_html_page_for_json_says_check_the_base_url(mock: aioresponses) -> None:
    # a web UI (Open WebUI, a proxy's page) answering 200 with its index page at the address
    mock.get(URL + "/models", body="<!doctype html><html><head><title>Open WebUI</title>"
                                   "</head><body><div id=app></div></body></html>",
             headers={"Content-Type": "text/html"})
    mock.get(URL + "/other", body="{oops")
    http = HttpClient(URL, provider="t")
    try:
        with pytest.raises(StreamError, match=r"not valid JSON: Open WebUI \(an HTML page.*"
                                              r"check the base URL"):
            await http.request_json("GET", "/models")
        with pytest.raises(StreamError, match=r"not valid JSON: b'\{oops'"):
            await http.request_json("GET", "/other")
    finally:
        await http.aclose()


async def _served(body: str, **kw: Any) -> list[tuple[str | None, Any]]:
    """Read ``body`` from a real server (aioresponses cannot hold a body this long)."""
    from aiohttp import web

    from modelplex.testing import serve_app

    async def answer(request: web.Request) -> web.Response:
        return web.Response(text=body, content_type="application/json")

    app = web.Application()
    app.router.add_post("/s", answer)
    async with serve_app(app) as url:
        http = HttpClient(url, provider="t")
        try:
            async with http.stream("POST", "/s", {}) as resp:
                return [e async for e in sse_json(resp, provider="t", **kw)]
        finally:
            await http.aclose()


async def test_a_long_whole_answer_on_one_line_is_read() -> None:
    text = "word " * 40000  # 200 kB on one line: more than the text kept of other bodies
    body = '{"choices":[{"message":{"content":"' + text + '"}}]}'
    events = await _served(body, require_end=False)
    assert events[0][1]["choices"][0]["message"]["content"] == text


async def test_much_text_that_is_no_stream_is_not_parsed() -> None:
    lines = "".join(f'"k{i}": "{"v" * 100}",\n' for i in range(1000))  # 100 kB, many lines
    with pytest.raises(StreamError, match="not an event stream"):
        await _served("{\n" + lines + '"end": 1}\n')
