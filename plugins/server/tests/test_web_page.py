"""The web chat page in a real browser: Debian's chromium driven by Playwright.

One ``modelplex serve`` application for the module, on a free loopback port, backed by the
real embedded model (``llamacpp:smollm2``, also named ``local``), by the core's
fault-injecting upstream (``fault``), by a scripted OpenAI-style upstream whose answers the
tests choose (``script``) and by an endpoint where nothing listens (``down``). Each test
opens the page in a fresh browser context and uses it as a person would.

The screenshots are test artifacts (in the test's tmp dir); ``MODELPLEX_SCREENSHOTS=DIR`` also
copies them to DIR (docs/images/web-chat.png and web-models.png are made that way).
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
from aiohttp import web
from playwright.async_api import Browser, Page, async_playwright, expect

from modelplex.plugins import Plugins
from modelplex.registry import ModelRegistry
from modelplex.testing import FaultyUpstream, closed_port_url, serve_app
from modelplex_server.app import AppServer, create_app, start
from modelplex_server.conversations import Conversation
from modelplex_server.gateway import GATEWAY
from modelplex_server.resolve import ModelResolver
from modelplex_server.settings import KeyConfig, ServerSettings, generate_key, hash_key

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]

pytestmark = [
    pytest.mark.slow,
    pytest.mark.asyncio(loop_scope="module"),
    pytest.mark.skipif(not Path(CHROMIUM).exists(),
                       reason=f"{CHROMIUM} is missing: install Debian's chromium "
                              "(apt-get install chromium; .ci/run does)"),
]


class ScriptedUpstream:
    """An OpenAI-style server that streams the pieces the test set, ``delay`` s apart, and
    counts the clients that went away."""

    def __init__(self) -> None:
        self.pieces: list[str] = ["Hello ", "from ", "the ", "script."]
        self.delay = 0.0
        self.disconnects = 0
        self.url = ""
        self._serving = AsyncExitStack()

    async def _models(self, _: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [{"id": "script",
                                                              "object": "model"}]})

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        await request.read()
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        head = {"id": "chatcmpl-script", "object": "chat.completion.chunk", "created": 1,
                "model": "script"}
        try:
            for piece in self.pieces:
                event = {**head, "choices": [{"index": 0, "delta": {"content": piece},
                                              "finish_reason": None}]}
                await resp.write(b"data: " + json.dumps(event).encode() + b"\n\n")
                await asyncio.sleep(self.delay)
        except (asyncio.CancelledError, ConnectionResetError):
            self.disconnects += 1
            raise
        end = {**head, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}
        usage = {**head, "choices": [], "usage": {"prompt_tokens": 9, "completion_tokens":
                                                  len(self.pieces), "total_tokens": 0}}
        for event in (end, usage):
            await resp.write(b"data: " + json.dumps(event).encode() + b"\n\n")
        await resp.write(b"data: [DONE]\n\n")
        await resp.write_eof()
        return resp

    async def __aenter__(self) -> ScriptedUpstream:
        app = web.Application()
        app.router.add_get("/v1/models", self._models)
        app.router.add_post("/v1/chat/completions", self._chat)
        self.url = await self._serving.enter_async_context(serve_app(app))
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._serving.aclose()


class Site:
    """What the tests reach: the servers (``keyed`` needs ``key``), both upstreams and the
    browser."""

    def __init__(self, server: AppServer, keyed: AppServer, key: str, fault: FaultyUpstream,
                 script: ScriptedUpstream, browser: Browser) -> None:
        self.server, self.keyed, self.key = server, keyed, key
        self.fault, self.script, self.browser = fault, script, browser


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def site(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Site]:
    tmp = tmp_path_factory.mktemp("web")
    (tmp / "openai.toml").write_text("")
    async with FaultyUpstream() as fault, ScriptedUpstream() as script:
        endpoints = {"fault": {"base_url": fault.url + "/v1"},
                     "script": {"base_url": script.url + "/v1"},
                     "down": {"base_url": closed_port_url() + "/v1"}}
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("MODELPLEX_OPENAI_ENDPOINTS", json.dumps(endpoints))
            mp.setenv("MODELPLEX_OPENAI_CONFIG", str(tmp / "openai.toml"))
            mp.setenv("MODELPLEX_LOAD_PLUGINS", "openai,anthropic,llamacpp,server")
            for name in ("ANTHROPIC_API_KEY", "ANTHROPIC_AUTH_TOKEN", "ANTHROPIC_BASE_URL"):
                mp.delenv(name, raising=False)  # anthropic: installed, not configured
            plugins = Plugins()
            config = ServerSettings(port=0, health_interval=None,
                                    models={"local": "llamacpp:smollm2"})
            resolver = ModelResolver(plugins=plugins, named_models=config.models)
            registry = ModelRegistry(plugins=plugins, get_provider=resolver.provider,
                                     providers=["llamacpp", "fault", "script", "down",
                                                "anthropic"],
                                     named_models=config.models, timeout=5)
            server = await start(create_app(config, resolver=resolver, registry=registry))
            key = generate_key()
            keyed_config = ServerSettings(port=0, health_interval=None,
                                          keys=[KeyConfig(name="web", hash=hash_key(key))])
            keyed_resolver = ModelResolver(plugins=plugins)
            keyed = await start(create_app(keyed_config, resolver=keyed_resolver,
                                           registry=ModelRegistry(
                                               plugins=plugins, providers=["fault"],
                                               get_provider=keyed_resolver.provider)))
            async with async_playwright() as pw:
                browser = await pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
                try:
                    yield Site(server, keyed, key, fault, script, browser)
                finally:
                    await browser.close()
                    await keyed.stop()
                    await server.stop()


@pytest_asyncio.fixture(loop_scope="module")
async def page(site: Site) -> AsyncIterator[Page]:
    """A fresh browser context (empty storage) on the page, ready; fails on script errors."""
    context = await site.browser.new_context(viewport={"width": 1100, "height": 720})
    page = await context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    await page.goto(site.server.url + "/")
    await expect(page.locator("body[data-ready=true]")).to_have_count(1)
    yield page
    await context.close()
    assert errors == []


async def choose(page: Page, model: str) -> None:
    await page.click("#model-button")
    await page.click(f'#model-list button.pick[data-model="{model}"]')
    await expect(page.locator("#model-label")).to_have_text(model)


async def send(page: Page, text: str) -> Any:
    """Type ``text``, press Enter, return the new answer's article."""
    count = await page.locator(".msg.assistant").count()
    await page.fill("#input", text)
    await page.press("#input", "Enter")
    answer = page.locator(".msg.assistant").nth(count)
    await expect(answer).to_have_count(1)
    return answer


async def watch(page: Page) -> None:
    """Record the text of the last answer at every change (to see it arrive in pieces)."""
    await page.evaluate("""() => {
        window.__seen = [];
        new MutationObserver(() => {
            const all = document.querySelectorAll('.msg.assistant .body');
            const last = all[all.length - 1];
            if (last) window.__seen.push(last.textContent);
        }).observe(document.getElementById('messages'),
                   {childList: true, subtree: true, characterData: true});
    }""")


async def test_selector_groups_searches_and_filters(page: Page) -> None:
    await page.focus("#model-button")
    await page.keyboard.press("Enter")  # keyboard alone: open, search, arrows, Enter
    await expect(page.locator("#model-search")).to_be_focused()
    groups = page.locator("#model-list section.group")
    await expect(groups).to_have_count(6)
    providers = [await g.get_attribute("data-provider") for g in await groups.all()]
    # named first; a provider that is not configured last
    assert providers == ["named", "down", "fault", "llamacpp", "script", "anthropic"]
    down = page.locator('section[data-provider="down"]')
    await expect(down.locator(".dot.bad")).to_have_count(1)
    await expect(down.locator(".error")).to_contain_text("cannot connect")
    # no key: greyed and collapsed, saying what to set, not a red error from trying
    anthropic = page.locator('section[data-provider="anthropic"]')
    await expect(anthropic).to_have_class("group off")
    await expect(anthropic.locator(".setup")).to_have_text(
        "not configured: set ANTHROPIC_API_KEY")
    await expect(anthropic.locator(".dot.off")).to_have_count(1)
    await expect(anthropic.locator(".error, ul, button.pick")).to_have_count(0)
    assert await anthropic.evaluate("e => getComputedStyle(e).opacity") == "0.6"
    await expect(page.locator('section[data-provider="llamacpp"] .dot.ok')).to_have_count(1)
    smol = page.locator('section[data-provider="llamacpp"] li.model')
    await expect(smol.locator(".badge").first).to_be_visible()
    await smol.locator("button.info").click()
    await expect(smol.locator("dl")).to_contain_text("8,192 tokens")
    await expect(smol.locator("dl")).to_contain_text("embeddings")

    await page.fill("#model-search", "smol")  # search as you type
    await expect(groups).to_have_count(2)
    assert [await g.get_attribute("data-provider") for g in await groups.all()] == \
        ["named", "llamacpp"]
    await page.fill("#model-search", "")
    await page.select_option("#filter-capability", "embeddings")
    await expect(groups).to_have_count(1)
    await expect(groups.first).to_have_attribute("data-provider", "llamacpp")
    await page.select_option("#filter-capability", "")
    await page.select_option("#filter-local", "false")  # every endpoint here is loopback
    await expect(page.locator('#model-list section[data-provider="llamacpp"]')).to_have_count(0)
    assert [await g.get_attribute("data-provider") for g in await groups.all()] in (
        [], ["named"])  # named models are aliases: the registry does not place them
    await page.select_option("#filter-local", "")
    await page.fill("#model-search", "scr")
    await expect(groups).to_have_count(1)
    await page.focus("#model-search")
    await page.keyboard.press("ArrowDown")
    await page.keyboard.press("Enter")
    await expect(page.locator("#model-label")).to_have_text("script:script")
    await expect(page.locator("#model-panel")).to_be_hidden()
    await expect(page.locator("#model-button")).to_be_focused()


async def test_new_chat_opens_the_model_selector(site: Site, page: Page) -> None:
    """Seed 003: "New chat" opens the model selector; the model chosen there is the new
    conversation's."""
    await choose(page, "fault:fault")
    await send(page, "Hello")
    await expect(page.locator(".msg.assistant").last).to_have_attribute("data-state", "done")
    await page.click("#new-chat")
    await expect(page.locator("#model-panel")).to_be_visible()
    await expect(page.locator("#model-button")).to_have_attribute("aria-expanded", "true")
    await expect(page.locator("#model-search")).to_be_focused()
    await expect(page.locator("#messages .msg")).to_have_count(0)  # a fresh conversation
    await page.click('#model-list button.pick[data-model="script:script"]')
    await expect(page.locator("#model-panel")).to_be_hidden()
    await expect(page.locator("#model-label")).to_have_text("script:script")
    answer = await send(page, "Who are you?")
    await expect(answer.locator(".body")).to_have_text("Hello from the script.")
    async with aiohttp.ClientSession() as http, http.get(
            site.server.url + "/api/conversations") as resp:
        newest = (await resp.json())["conversations"][0]
    assert (newest["title"], newest["model"]) == ("Who are you?", "script:script")
    await page.click("#new-chat")  # Escape closes it again, nothing chosen
    await expect(page.locator("#model-panel")).to_be_visible()
    await page.keyboard.press("Escape")
    await expect(page.locator("#model-panel")).to_be_hidden()


async def test_real_model_streams_token_by_token(site: Site, page: Page,
                                                 tmp_path: Path) -> None:
    await choose(page, "local")  # the named model: llamacpp:smollm2
    await page.click("#settings-button")
    await page.fill("#max-tokens", "24")
    await page.select_option("#mode", "precise")
    await page.fill("#input", "line one")
    await page.press("#input", "Shift+Enter")  # a new line, nothing sent
    await page.type("#input", "line two")
    assert await page.input_value("#input") == "line one\nline two"
    assert await page.locator(".msg").count() == 0
    await page.fill("#input", "")
    await watch(page)
    answer = await send(page, "What is the capital of France?")
    await expect(answer).to_have_attribute("data-state", "done", timeout=60_000)
    final = (await answer.locator(".body").text_content() or "").strip()
    seen = [s.strip() for s in await page.evaluate("window.__seen") if s.strip()]
    assert final and len(set(seen)) >= 3, seen  # it arrived in pieces, rendered as it came
    assert all(final.startswith(s[:len(s) // 2]) for s in seen)
    stats = await answer.locator(".stats").text_content() or ""
    assert "local" in stats and "tokens" in stats and "first token" in stats
    await page.click("#settings-button")
    await page.fill("#input", "And of Italy?")
    await page.screenshot(path=str(tmp_path / "web-chat.png"))  # the test artifacts
    await page.set_viewport_size({"width": 1100, "height": 960})
    await page.click("#model-button")
    await page.locator('section[data-provider="llamacpp"] button.info').click()
    await page.locator("#model-panel").screenshot(path=str(tmp_path / "web-models.png"))
    for name in ("web-chat.png", "web-models.png"):
        assert (tmp_path / name).stat().st_size > 10_000
        if os.environ.get("MODELPLEX_SCREENSHOTS"):  # a directory: docs/images
            shutil.copy(tmp_path / name, Path(os.environ["MODELPLEX_SCREENSHOTS"]) / name)


async def test_scripted_answer_arrives_in_pieces(site: Site, page: Page) -> None:
    site.script.pieces = ["One ", "two ", "**three** ", "four."]
    site.script.delay = 0.15
    await choose(page, "script:script")
    await watch(page)
    answer = await send(page, "count")
    await expect(page.locator("#stop")).to_be_visible()
    await expect(answer).to_have_attribute("data-state", "done")
    seen = [s for s in await page.evaluate("window.__seen") if s]
    assert {"One", "One two", "One two three"} <= {s.strip() for s in seen}, seen
    await expect(answer.locator(".body strong")).to_have_text("three")
    await expect(page.locator("#send")).to_be_visible()


async def test_stop_cancels_the_upstream_request(site: Site, page: Page) -> None:
    await choose(page, "fault:fault")
    before = site.fault.disconnects
    site.fault.faults.append("stall_mid")  # two pieces, then nothing
    answer = await send(page, "hello")
    await expect(answer.locator(".body")).to_have_text("tok tok")
    await page.click("#stop")
    await expect(answer).to_have_attribute("data-state", "stopped")
    await expect(answer.locator(".body")).to_have_text("tok tok")  # the partial answer stays
    for _ in range(100):
        if site.fault.disconnects > before:
            break
        await asyncio.sleep(0.05)
    assert site.fault.disconnects == before + 1
    assert await site.fault.wait_idle()


async def test_upstream_error_shows_inline_with_the_partial_answer(site: Site,
                                                                   page: Page) -> None:
    await choose(page, "fault:fault")
    site.fault.faults.append("error_event")  # two pieces, then the provider's error
    answer = await send(page, "hello")
    await expect(answer).to_have_attribute("data-state", "error")
    await expect(answer.locator(".body")).to_have_text("tok tok")
    await expect(answer.locator(".meta .error[role=alert]")).to_contain_text("crashed")
    site.fault.faults.append("500")  # failing before the first piece: the status's message
    answer = await send(page, "again")
    await expect(answer).to_have_attribute("data-state", "error")
    await expect(answer.locator(".meta .error")).to_contain_text("internal error")


async def test_model_output_is_text_and_never_runs(site: Site, page: Page) -> None:
    site.script.pieces = ["<script>window.__pwned = 1</script> ",
                          "<img src=x onerror=\"window.__pwned = 2\"> ",
                          "[click](javascript:window.__pwned=3) ",
                          "`<b>bold</b>` <svg onload=\"window.__pwned=4\"></svg>"]
    site.script.delay = 0.0
    await choose(page, "script:script")
    answer = await send(page, "be evil")
    await expect(answer).to_have_attribute("data-state", "done")
    body = answer.locator(".body")
    text = await body.text_content() or ""
    assert "<script>window.__pwned = 1</script>" in text
    assert '<img src=x onerror="window.__pwned = 2">' in text
    assert "[click](javascript:window.__pwned=3)" in text
    for tag in ("script", "img", "svg", "b", "a"):
        assert await body.locator(tag).count() == 0, tag
    await expect(body.locator("code")).to_have_text("<b>bold</b>")
    await page.reload()  # the stored answer too
    await expect(page.locator(".msg.assistant .body")).to_contain_text("<img src=x")
    assert await page.evaluate("window.__pwned") is None
    assert await page.locator("#messages img, #messages script").count() == 0


async def test_markdown_renderer(page: Page) -> None:
    out = await page.evaluate("""async () => {
        const { renderMarkdown } = await import('/ui/markdown.js');
        const render = (text) => {
            const div = document.createElement('div');
            renderMarkdown(text, div);
            return div;
        };
        const md = render('# Title\\n\\nSome *em* and **strong** and `x < y`.\\n\\n' +
            '- one\\n- two\\n\\n1. first\\n2. second\\n\\n```python\\nprint("<hi>")\\n```\\n' +
            '> quoted\\n\\n[ok](https://example.org/a?b=1) [bad](javascript:alert(1)) ' +
            '[data](data:text/html,x) https://example.com/x.');
        const open = render('```\\nunclosed <tag>');
        return {
            tags: [...md.children].map((n) => n.tagName),
            em: md.querySelector('em').textContent,
            strong: md.querySelector('strong').textContent,
            code: md.querySelector('p code').textContent,
            items: [...md.querySelectorAll('li')].map((n) => n.textContent),
            pre: md.querySelector('pre code').textContent,
            lang: md.querySelector('pre code').dataset.lang,
            links: [...md.querySelectorAll('a')].map((a) => [a.textContent, a.href, a.rel]),
            text: md.textContent,
            open: open.querySelector('pre').textContent,
        };
    }""")
    assert out["tags"] == ["H3", "P", "UL", "OL", "PRE", "BLOCKQUOTE", "P"]
    assert (out["em"], out["strong"], out["code"]) == ("em", "strong", "x < y")
    assert out["items"] == ["one", "two", "first", "second"]
    assert (out["pre"], out["lang"]) == ('print("<hi>")', "python")
    assert out["links"] == [["ok", "https://example.org/a?b=1", "noopener noreferrer nofollow"],
                            ["https://example.com/x", "https://example.com/x",
                             "noopener noreferrer nofollow"]]
    assert "[bad](javascript:alert(1))" in out["text"]
    assert "[data](data:text/html,x)" in out["text"]
    assert out["open"] == "unclosed <tag>"


async def test_conversations_reload_rename_search_delete(site: Site, page: Page) -> None:
    site.script.pieces = ["Stored ", "answer."]
    site.script.delay = 0.0
    await choose(page, "script:script")
    await page.click("#settings-button")
    await page.fill("#system-prompt", "Answer briefly.")
    answer = await send(page, "Remember me")
    await expect(answer).to_have_attribute("data-state", "done")
    url = page.url
    assert "#/c/" in url
    await page.reload()  # the conversation comes back from the server
    await expect(page.locator("body[data-ready=true]")).to_have_count(1)
    assert page.url == url
    await expect(page.locator(".msg.user")).to_have_text(["Remember me"])
    await expect(page.locator(".msg.assistant .body")).to_have_text(["Stored answer."])
    # seed 003: the stored answer says which model wrote it, and its usage
    await expect(page.locator(".msg.assistant .meta .stats")).to_have_text(
        "script:script \u00b7 9 + 2 tokens")
    await expect(page.locator("#model-label")).to_have_text("script:script")
    await expect(page.locator("#system-prompt")).to_have_value("Answer briefly.")

    site.script.pieces = ["Another ", "answer."]  # regenerate replaces the last answer
    await page.click("button.regen")
    await expect(page.locator(".msg.assistant")).to_have_count(1)
    await expect(page.locator(".msg.assistant")).to_have_attribute("data-state", "done")
    await page.reload()
    await expect(page.locator(".msg.assistant .body")).to_have_text(["Another answer."])

    conv_id = url.rsplit("/", 1)[1]
    item = page.locator(f'#conv-list li[data-id="{conv_id}"]')
    await expect(item.locator(".open")).to_have_attribute("aria-current", "true")
    await item.locator("button.rename").click()  # rename with the keyboard
    await page.keyboard.press("Control+A")
    await page.keyboard.type("Renamed chat")
    await page.keyboard.press("Enter")
    await expect(item.locator(".title")).to_have_text("Renamed chat")
    await page.fill("#conv-search", "renamed")
    await expect(page.locator("#conv-list li")).to_have_count(1)
    await page.fill("#conv-search", "no such chat")
    await expect(page.locator("#conv-list li")).to_have_count(0)
    await page.fill("#conv-search", "")
    page.once("dialog", lambda d: asyncio.ensure_future(d.accept()))
    await item.locator("button.delete").click()
    await expect(item).to_have_count(0)
    await expect(page.locator(".msg")).to_have_count(0)
    assert "#/c/" not in page.url
    conversations = await site.server.runner.app[GATEWAY].conversations.all()
    assert conv_id not in {c.id for c in conversations}


async def test_the_conversation_list_follows_the_pages(site: Site, page: Page) -> None:
    """``GET /api/conversations`` answers a page (at most 1000): the sidebar asks for the
    next ones (``after`` the page's ``last_id``) while ``has_more``, so it still shows every
    conversation of a key that has more than a page."""
    store = site.server.runner.app[GATEWAY].conversations
    made = [await store.create(Conversation(title=f"Bulk {i:04d}", model="script:script",
                                            provider="script")) for i in range(1003)]
    try:
        await page.reload()
        await expect(page.locator("body[data-ready=true]")).to_have_count(1)
        await expect(page.locator("#conv-list li", has_text="Bulk")).to_have_count(1003)
        await expect(page.locator("#conv-list li", has_text="Bulk 0000")).to_have_count(1)
        await page.fill("#conv-search", "bulk 1002")
        await expect(page.locator("#conv-list li")).to_have_count(1)
    finally:
        for item in made:
            assert item is not None and await store.delete(item.id)


async def test_phone_width_and_dark_mode(site: Site, tmp_path: Path) -> None:
    context = await site.browser.new_context(viewport={"width": 390, "height": 760},
                                             color_scheme="dark")
    page = await context.new_page()
    await page.goto(site.server.url + "/")
    await expect(page.locator("body[data-ready=true]")).to_have_count(1)
    assert await page.evaluate("document.documentElement.scrollWidth") <= 390
    assert not await page.locator("#sidebar").is_visible() or \
        (await page.locator("#sidebar").bounding_box() or {"x": 0})["x"] < 0
    background = await page.evaluate("getComputedStyle(document.body).backgroundColor")
    assert background == "rgb(22, 23, 26)"
    await page.screenshot(path=str(tmp_path / "web-phone-dark.png"))
    await page.click("#toggle-sidebar")
    await expect(page.locator("#new-chat")).to_be_in_viewport(ratio=1)
    await page.mouse.click(380, 400)  # a tap beside the drawer closes it
    await expect(page.locator("#new-chat")).not_to_be_in_viewport()
    if os.environ.get("MODELPLEX_SCREENSHOTS"):
        shutil.copy(tmp_path / "web-phone-dark.png", os.environ["MODELPLEX_SCREENSHOTS"])
    await context.close()


async def test_with_keys_the_page_asks_for_one(site: Site) -> None:
    context = await site.browser.new_context()
    page = await context.new_page()
    await page.goto(site.keyed.url + "/")  # the page is public, its API calls are not
    await expect(page.locator("#key-form")).to_be_visible()
    await page.fill("#api-key", site.key)
    await page.click("#api-key-save")
    await expect(page.locator("body[data-ready=true]")).to_have_count(1)
    await expect(page.locator("#key-form")).to_be_hidden()
    await choose(page, "fault:fault")
    answer = await send(page, "hello")
    await expect(answer).to_have_attribute("data-state", "done")
    await expect(answer.locator(".body")).to_have_text("tok tok tok tok tok")
    await context.close()


@pytest_asyncio.fixture(loop_scope="module")
async def elsewhere() -> AsyncIterator[str]:
    """A site of another origin (another port): its URL."""
    app = web.Application()

    async def index(_: web.Request) -> web.Response:
        return web.Response(text="<!doctype html><title>elsewhere</title>",
                            content_type="text/html")

    app.router.add_get("/", index)
    async with serve_app(app) as url:
        yield url


async def test_a_page_of_another_origin_cannot_use_the_server(site: Site,
                                                              elsewhere: str) -> None:
    """What the outside probe did (issue 19 #3): a page served from another origin posts a
    conversation with ``no-cors`` fetches (text/plain, a form) and opens ``/ws`` to chat with
    a model. None of it reaches the server's state or a model."""
    evil_url = elsewhere
    before = site.fault.requests
    context = await site.browser.new_context()
    try:
        page = await context.new_page()
        await page.goto(evil_url + "/")
        outcome = await page.evaluate("""async (server) => {
            const body = JSON.stringify({model: "fault:fault", title: "from elsewhere"});
            await fetch(server + "/api/conversations", {method: "POST", mode: "no-cors", body});
            await fetch(server + "/api/conversations", {method: "POST", mode: "no-cors",
                body: new URLSearchParams({model: "fault:fault", title: "from elsewhere"})});
            await fetch(server + "/api/chat", {method: "POST", mode: "no-cors",
                body: JSON.stringify({model: "fault:fault", message: "hi"})});
            let read = "nothing";
            try {
                const resp = await fetch(server + "/api/conversations", {method: "POST",
                    headers: {"Content-Type": "application/json"}, body});
                read = await resp.text();
            } catch (e) { read = "refused"; }
            const events = [];
            const opened = await new Promise((resolve) => {
                const ws = new WebSocket(server.replace("http", "ws") + "/ws");
                ws.onopen = () => {
                    ws.send(JSON.stringify({type: "send_message", model: "fault:fault",
                                            message: "hi", request_id: "x"}));
                    setTimeout(() => resolve(true), 1500);
                };
                ws.onmessage = (m) => events.push(m.data);
                ws.onerror = () => resolve(false);
            });
            return {read, opened, events};
        }""", site.server.url)
    finally:
        await context.close()
    assert outcome == {"read": "refused", "opened": False, "events": []}
    assert site.fault.requests == before  # no model was asked
    async with aiohttp.ClientSession() as session, session.get(
            site.server.url + "/api/conversations") as resp:
        titles = [c["title"] for c in (await resp.json())["conversations"]]
    assert "from elsewhere" not in titles


async def test_a_page_of_an_allowed_origin_reads_streams_and_errors(site: Site,
                                                                    elsewhere: str) -> None:
    """``cors_origins`` covers streamed answers and the errors (issue 19 #9): a page of an
    allowed origin reads a stream, and the status and ``Retry-After`` of 401, 403, 404, 429,
    where it got "Failed to fetch" before."""
    app_url = elsewhere
    key = generate_key()
    settings = ServerSettings(port=0, health_interval=None, cors_origins=[app_url], keys=[
        KeyConfig(name="app", hash=hash_key(key), models=["fault:*"], rate_limit=5)])
    resolver = ModelResolver(plugins=Plugins())
    server = await start(create_app(settings, resolver=resolver, registry=ModelRegistry(
        plugins=resolver.plugins, providers=["fault"], get_provider=resolver.provider)))
    context = await site.browser.new_context()
    try:
        page = await context.new_page()
        await page.goto(app_url + "/")
        seen = await page.evaluate("""async ([server, key]) => {
            const out = [];
            const call = async (path, init, auth) => {
                const headers = {"Content-Type": "application/json"};
                if (auth) headers.Authorization = "Bearer " + auth;
                try {
                    const resp = await fetch(server + path, {headers, ...init});
                    const text = await resp.text();
                    out.push([resp.status, resp.headers.get("Retry-After"),
                              text.includes("data: [DONE]")]);
                } catch (e) { out.push(["failed", String(e)]); }
            };
            const chat = (model, stream) => ({method: "POST", body: JSON.stringify({
                model, stream, messages: [{role: "user", content: "hi"}]})});
            await call("/v1/chat/completions", chat("fault:fault", true), key);
            await call("/v1/models", {}, "mpx-wrong");
            await call("/v1/chat/completions", chat("llamacpp:smollm2", false), key);
            await call("/api/conversations/nope", {}, key);
            for (let i = 0; i < 4; i++) {
                await call("/v1/chat/completions", chat("fault:fault", false), key);
            }
            return out;
        }""", [server.url, key])
    finally:
        await context.close()
        await server.stop()
    assert seen[:4] == [[200, None, True], [401, None, False], [403, None, False],
                        [404, None, False]]
    assert seen[4:7] == [[200, None, False]] * 3  # the 403 counted: 5 a minute
    assert seen[7][0] == 429 and int(seen[7][1]) >= 1  # Retry-After readable (exposed)
