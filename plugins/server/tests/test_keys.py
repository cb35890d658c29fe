"""Keys with budgets: made by an admin (the API or ``modelplex keys``), kept hashed in the store,
shown once; their spend counted in the store and their budget enforced with a 429 naming when
it resets, across servers sharing the store; 403 for a model a key may not use; /api/keys/me;
admin routes need an admin key."""

from __future__ import annotations

import contextlib
import re
import sqlite3
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from modelplex.testing import Cli, CliResult
from modelplex_server import gateway as gateway_module
from modelplex_server.app import AppServer
from modelplex_server.budgets import Budget, Spend, period_bounds
from modelplex_server.pg_store import PostgresConversationStore
from modelplex_server.settings import KeyConfig, generate_key, hash_key
from modelplex_server.sqlite_store import SQLiteConversationStore

BODY = {"model": "fault:fault", "messages": [{"role": "user", "content": "Hi"}]}


async def call(server: AppServer, key: str | None, method: str, path: str,
               body: Any = None) -> tuple[int, Any, dict[str, str]]:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    async with aiohttp.ClientSession() as session, session.request(
            method, server.url + path, json=body, headers=headers) as resp:
        text = await resp.text()
        return resp.status, (await resp.json()) if text else None, dict(resp.headers)


async def keys_cli(env: dict[str, str | None], *args: str) -> CliResult:
    """``modelplex keys ARGS`` in a subprocess, ``env`` added to this process's variables (it
    must succeed)."""
    result = await Cli(drop=()).arun("keys", *args, env=env)
    assert result.returncode == 0, result.stderr
    return result


def test_keys_create_names_the_option_of_a_bad_value() -> None:
    """``--budget 50/fortnight``: the option and the fix, without pydantic's wording."""
    from click.testing import CliRunner

    from modelplex_server.cli import keys

    result = CliRunner().invoke(keys, ["create", "--name", "k", "--budget", "50/fortnight"])
    assert result.exit_code == 2
    assert "Invalid value for '--budget': budget '50/fortnight' is not AMOUNT/PERIOD" in (
        result.output), result.output
    assert "Value error" not in result.output


def test_budgets_parse_and_periods() -> None:
    assert Budget.parse("50/month") == Budget(50.0, "usd", "month")
    assert Budget.parse("$12.5/week") == Budget(12.5, "usd", "week")
    assert Budget.parse("2M tokens/day") == Budget(2e6, "tokens", "day")
    assert Budget.parse("1500 TOKENS / Month") == Budget(1500.0, "tokens", "month")
    for bad in ("50", "50/year", "-3/day", "0/day", "lots/month", "2M/month"):
        with pytest.raises(ValueError):
            Budget.parse(bad)
    with pytest.raises(ValueError, match="budget"):
        KeyConfig(name="k", hash=hash_key("k"), budget="50/fortnight")
    now = datetime(2026, 12, 31, 23, 59, tzinfo=UTC)
    assert period_bounds("month", now)[0] == "month:2026-12"
    assert period_bounds("month", now)[2] == datetime(2027, 1, 1, tzinfo=UTC)
    assert period_bounds("day", now)[2] == datetime(2027, 1, 1, tzinfo=UTC)
    assert period_bounds("week", now)[0] == "week:2026-W53"
    described = Budget.parse("20 tokens/day").describe(Spend(8, 0.0, 1), now)
    assert described["remaining"] == 12 and described["resets_at"] == "2027-01-01T00:00:00Z"


async def test_admin_makes_keys_with_budgets(serve: Any, tmp_path: Path) -> None:
    admin = generate_key()
    plain = generate_key()
    server = await serve(store=SQLiteConversationStore(tmp_path / "c.db"), keys=[
        KeyConfig(name="root", hash=hash_key(admin), admin=True),
        KeyConfig(name="plain", hash=hash_key(plain))])
    # admin routes need an admin key
    for key in (plain, None):
        status, body, _ = await call(server, key, "GET", "/api/keys")
        assert status == (403 if key else 401)
    status, body, _ = await call(server, plain, "POST", "/api/keys", {"name": "x"})
    assert status == 403 and body["error"]["code"] == "admin_required"

    status, made, _ = await call(server, admin, "POST", "/api/keys", {
        "name": "team-a", "budget": "20 tokens/day", "models": ["fault:*"], "rate_limit": 100})
    assert status == 201
    team = made["key"]
    assert team.startswith("mpx-") and "hash" not in made
    assert made["budget"] == "20 tokens/day" and made["models"] == ["fault:*"]
    status, body, _ = await call(server, admin, "POST", "/api/keys", {"name": "team-a"})
    assert status == 409 and body["error"]["code"] == "key_exists"
    status, body, _ = await call(server, admin, "POST", "/api/keys",
                                 {"name": "y", "budget": "50/fortnight"})
    assert status == 400

    status, listing, _ = await call(server, admin, "GET", "/api/keys")
    assert status == 200
    assert [k["name"] for k in listing["keys"]] == ["root", "plain", "team-a"]
    assert [k["source"] for k in listing["keys"]] == ["config", "config", "store"]
    assert team not in str(listing) and hash_key(team) not in str(listing)

    status, me, _ = await call(server, team, "GET", "/api/keys/me")
    assert status == 200 and me["name"] == "team-a" and me["rate_limit"] == 100
    assert me["budget"]["spent"] == 0 and me["budget"]["remaining"] == 20

    # 403 for a model the key may not use; the budget: 8 tokens an answer
    status, body, _ = await call(server, team, "POST", "/v1/chat/completions",
                                 {**BODY, "model": "llamacpp:smollm2"})
    assert status == 403 and body["error"]["code"] == "model_not_allowed"
    for _ in range(3):
        status, _, _ = await call(server, team, "POST", "/v1/chat/completions", BODY)
        assert status == 200
    status, body, headers = await call(server, team, "POST", "/v1/chat/completions", BODY)
    assert status == 429, body
    error = body["error"]
    assert error["code"] == "budget_exceeded" and error["type"] == "budget"
    _, _, end = period_bounds("day")
    resets = end.isoformat().replace("+00:00", "Z")
    assert error["message"] == (f"budget exceeded: key 'team-a' spent 24 tokens of its "
                                f"budget of 20 tokens/day; it resets at {resets}")
    assert 0 < int(headers["Retry-After"]) <= 86400
    status, me, _ = await call(server, team, "GET", "/api/keys/me")
    assert me["budget"]["spent"] == 24 and me["budget"]["remaining"] == 0
    assert me["budget"]["requests"] == 3 and me["budget"]["resets_at"] == resets

    status, _, _ = await call(server, admin, "DELETE", "/api/keys/team-a")
    assert status == 204
    status, body, _ = await call(server, team, "GET", "/api/keys/me")
    assert status == 401  # revoked: at once on this server
    status, _, _ = await call(server, admin, "DELETE", "/api/keys/team-a")
    assert status == 404
    status, body, _ = await call(server, admin, "DELETE", "/api/keys/plain")
    assert status == 400 and body["error"]["code"] == "key_in_config"


async def test_a_usd_budget_counts_prices(serve: Any, tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    priced: list[tuple[str, str, int]] = []

    def cost_of(provider: str, model: str, usage: Any, config: Any = None) -> float:
        priced.append((provider, model, usage.total_tokens))
        return 0.75

    monkeypatch.setattr(gateway_module, "cost_of", cost_of)
    store = SQLiteConversationStore(tmp_path / "c.db")
    key = generate_key()
    server = await serve(store=store, keys=[KeyConfig(name="k", hash=hash_key(key),
                                                      budget="$1/month")])
    assert (await call(server, key, "POST", "/v1/chat/completions", BODY))[0] == 200
    assert (await call(server, key, "POST", "/v1/chat/completions", BODY))[0] == 200
    status, body, _ = await call(server, key, "POST", "/v1/chat/completions", BODY)
    assert status == 429 and "spent 1.50 USD of its budget of 1 USD/month" in \
        body["error"]["message"]
    assert priced == [("fault", "fault", 8)] * 2  # the endpoint and the model
    period, _, _ = period_bounds("month")
    assert await store.get_spend("k", period) == Spend(16, 1.5, 2)


async def test_a_budget_spent_through_one_server_stops_the_other(
        serve: Any, postgres_url: str) -> None:
    admin = generate_key()
    keys = [KeyConfig(name="root", hash=hash_key(admin), admin=True)]
    one = await serve(store=PostgresConversationStore(postgres_url), keys=keys)
    two = await serve(store=PostgresConversationStore(postgres_url), keys=keys)
    status, made, _ = await call(one, admin, "POST", "/api/keys",
                                 {"name": "shared", "budget": "16 tokens/day"})
    assert status == 201
    key = made["key"]
    assert (await call(two, key, "POST", "/v1/chat/completions", BODY))[0] == 200
    assert (await call(one, key, "POST", "/v1/chat/completions", BODY))[0] == 200
    for server in (one, two):
        status, body, _ = await call(server, key, "POST", "/v1/chat/completions", BODY)
        assert status == 429 and body["error"]["code"] == "budget_exceeded"
    # a conversation made through one is continued through the other, and back
    status, conv, _ = await call(one, admin, "POST", "/api/conversations",
                                 {"model": "fault:fault"})
    assert status == 201
    for server, text in ((one, "first"), (two, "second"), (one, "third")):
        async with aiohttp.ClientSession() as session, session.post(
                server.url + "/api/chat", headers={"Authorization": f"Bearer {admin}"},
                json={"conversation_id": conv["id"], "message": text}) as resp:
            assert resp.status == 200 and "event: done" in await resp.text()
    status, got, _ = await call(two, admin, "GET", f"/api/conversations/{conv['id']}")
    assert status == 200
    assert [m["content"] for m in got["messages"] if m["role"] == "user"] == [
        "first", "second", "third"]
    assert len(got["messages"]) == 6


async def test_store_keys_alone_with_require_keys(serve: Any, tmp_path: Path) -> None:
    store = SQLiteConversationStore(tmp_path / "c.db")
    env: dict[str, str | None] = {"MODELPLEX_LOAD_PLUGINS": "server"}
    made = await keys_cli(env, "create", "--name", "cli", "--rpm", "600", "--tpm", "200000",
                          "--budget", "50/month", "--models", "fault:*, local", "--store",
                          str(store.path))
    match = re.search(r"API key \(shown once\): (mpx-\S+)", made.stderr)
    assert match, made.stderr
    key = match.group(1)
    assert made.stdout.strip() == ("created key 'cli': 600 requests/min, 200000 tokens/min, "
                                   "budget 50/month, models fault:*, local")
    with contextlib.closing(sqlite3.connect(store.path)) as db:  # only its hash is kept
        rows = db.execute("SELECT * FROM api_keys").fetchall()
    assert key not in str(rows) and hash_key(key) in str(rows)
    server = await serve(store=store, require_keys=True)
    assert (await call(server, None, "GET", "/api/models"))[0] == 401
    status, me, _ = await call(server, key, "GET", "/api/keys/me")
    assert status == 200 and me["models"] == ["fault:*", "local"] and me["source"] == "store"
    assert me["budget"]["amount"] == 50 and me["budget"]["unit"] == "usd"
    assert (await call(server, key, "POST", "/v1/chat/completions", BODY))[0] == 200
    listed = await keys_cli(env, "list", "--store", str(store.path))
    assert re.search(r"^cli\s+active\s+600\s+200000\s+50 USD/month\s+0\.00\s+fault:\*,local$",
                     listed.stdout, re.M), listed.stdout
    revoked = await keys_cli(env, "revoke", "cli", "--store", str(store.path))
    assert revoked.stdout.strip() == "revoked key 'cli'"
    server.runner.app[gateway_module.GATEWAY].key_lookup.forget()  # or wait CACHE_SECONDS
    assert (await call(server, key, "GET", "/api/keys/me"))[0] == 401
