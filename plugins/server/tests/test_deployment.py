"""The deployment files (``deploy/``) and ``docs/deployment.md``: Docker cannot run here, so
everything they use that can run here is checked: the page shows the files as they are, the
compose file parses and its services agree with the config it mounts, the Dockerfile's files,
extras and options exist (its packages build from exactly what it copies), the Kubernetes
manifest's probes and timings fit the server, and the stack's services, started by hand
(redis-server, PostgreSQL, an OpenAI-compatible upstream), serve through the same config with
the compose file's command and health check."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import pytest

from modelplex.testing import Cli
from modelplex.testing.upstream import FaultyUpstream
from modelplex_server.app import create_app
from modelplex_server.cli import serve
from modelplex_server.probes import PROBE_PATHS
from modelplex_server.settings import load_server_config
from modelplex_server.testing import PostgresServer, ServeProcess

yaml = pytest.importorskip("yaml")

ROOT = Path(__file__).resolve().parents[3]
DEPLOY = ROOT / "deploy"
PAGE = ROOT / "docs" / "deployment.md"
_BLOCK = re.compile(r"<!-- deploy: (?P<name>[\w.-]+) -->\n```\w*\n(?P<body>.*?)^```$",
                    re.M | re.S)


def page_blocks() -> dict[str, str]:
    return {m["name"]: m["body"] for m in _BLOCK.finditer(PAGE.read_text(encoding="utf-8"))}


def compose() -> dict[str, Any]:
    return dict(yaml.safe_load((DEPLOY / "docker-compose.yml").read_text(encoding="utf-8")))


def check_serve_args(args: list[str]) -> dict[str, Any]:
    """``modelplex serve`` accepts these options (parsed, not run); their values."""
    assert args[:2] == ["modelplex", "serve"], args
    ctx = serve.make_context("serve", list(args[2:]))
    return dict(ctx.params)


def test_the_page_shows_the_files() -> None:
    blocks = page_blocks()
    for name in ("docker-compose.yml", "modelplex.toml", "Dockerfile"):
        assert blocks[name] == (DEPLOY / name).read_text(encoding="utf-8"), name
    assert "kubernetes" in blocks


def test_the_compose_file_and_its_config_agree(monkeypatch: pytest.MonkeyPatch) -> None:
    spec = compose()
    services = spec["services"]
    assert set(services) == {"modelplex", "redis", "postgres", "upstream"}
    app = services["modelplex"]
    params = check_serve_args(app["command"])
    assert params["workers"] == 4 and params["graceful_timeout"] == 25

    # the config it mounts parses (every setting known) and names the other services
    source, target, mode = app["volumes"][0].split(":")
    assert mode == "ro" and target == params["config_path"]
    assert app["environment"]["MODELPLEX_CONFIG"] == target
    config_file = DEPLOY / source
    monkeypatch.delenv("MODELPLEX_SERVER_CONFIG", raising=False)
    config, settings = load_server_config(config_file)
    assert settings.workers == params["workers"] and settings.require_keys
    assert settings.shutdown_timeout == params["graceful_timeout"]
    grace = int(app["stop_grace_period"].removesuffix("s"))
    assert grace > settings.shutdown_timeout
    store = urlsplit(settings.store or "")
    postgres = services["postgres"]["environment"]
    assert store.scheme == "postgresql" and store.hostname == "postgres"
    assert (store.username, store.password, store.path[1:]) == (
        postgres["POSTGRES_USER"], postgres["POSTGRES_PASSWORD"], postgres["POSTGRES_DB"])
    assert config.state["backend"] == "redis"
    assert urlsplit(config.state["url"]).hostname == "redis"

    # the upstream endpoint: the openai plugin reads it; it is the upstream service's port
    endpoints = json.loads(app["environment"]["MODELPLEX_OPENAI_ENDPOINTS"])
    monkeypatch.setenv("MODELPLEX_OPENAI_ENDPOINTS", json.dumps(endpoints))
    from modelplex_openai.config import load_endpoints

    monkeypatch.setenv("MODELPLEX_OPENAI_CONFIG", os.devnull)
    (upstream,) = [e for e in load_endpoints() if e.name == "upstream"]
    assert upstream.error is None and upstream.base_url
    base = urlsplit(upstream.base_url)
    command = services["upstream"]["command"]
    assert base.hostname == "upstream" and str(base.port) == command[command.index("--port") + 1]
    alias = command[command.index("--alias") + 1]
    assert config.models["fast"].deployments[0].model == f"upstream:{alias}"
    assert set(app["environment"]["MODELPLEX_LOAD_PLUGINS"].split(",")) >= {"server", "openai",
                                                                            "redis"}
    # published port, health check and dependencies
    assert app["ports"] == [f"{settings.port}:{settings.port}"]
    check = app["healthcheck"]["test"]
    assert check[:3] == ["CMD", "python", "-c"]
    assert f"http://127.0.0.1:{settings.port}/readyz" in check[3]
    for name, condition in app["depends_on"].items():
        assert name in services
        if condition["condition"] == "service_healthy":
            assert "healthcheck" in services[name]
    assert app["build"] == {"context": "..", "dockerfile": "deploy/Dockerfile"}
    assert set(spec["volumes"]) == {"pgdata", "models"}


def test_the_dockerfile(tmp_path: Path) -> None:
    lines = [line for line in (DEPLOY / "Dockerfile").read_text().replace("\\\n", " ")
             .splitlines() if line.strip() and not line.startswith("#")]
    copies = [line.split()[1:] for line in lines if line.startswith("COPY ")]
    context = tmp_path / "context"
    for source, _ in copies:  # the build context is the repository root
        assert (ROOT / source).is_dir(), source
        shutil.copytree(ROOT / source, context / source,
                        ignore=shutil.ignore_patterns("tests", "__pycache__", "*.egg-info"))
    (run,) = [line for line in lines if line.startswith("RUN ")]
    install = shlex.split(run.removeprefix("RUN ").split("&&")[0])
    assert install[:2] == ["pip", "install"]
    targets = install[2:]
    for target in targets:
        path, _, extras = target.partition("[")
        project = tomllib.loads((context / path / "pyproject.toml").read_text())["project"]
        for extra in filter(None, extras.rstrip("]").split(",")):
            assert extra in project.get("optional-dependencies", {}), (target, extra)
    # the packages build from exactly what the Dockerfile copies
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps",
                            "--no-build-isolation", "--no-index", "-q", "-w",
                            str(tmp_path / "wheels"),
                            *[str(context / t.partition("[")[0]) for t in targets]],
                           capture_output=True, text=True, timeout=300)
    assert built.returncode == 0, built.stderr
    names = sorted(p.name.split("-")[0] for p in (tmp_path / "wheels").glob("*.whl"))
    assert names == ["modelplex", "modelplex_openai", "modelplex_redis", "modelplex_server"]
    (cmd,) = [line for line in lines if line.startswith("CMD ")]
    params = check_serve_args(json.loads(cmd.removeprefix("CMD ")))
    assert params["config_path"] == compose()["services"]["modelplex"]["volumes"][0] \
        .split(":")[1]
    assert any(line == "EXPOSE 8000" for line in lines)


def test_the_kubernetes_manifest() -> None:
    deployment, service = yaml.safe_load_all(page_blocks()["kubernetes"])
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    params = check_serve_args(container["args"])
    probes = {container[p]["httpGet"]["path"] for p in
              ("livenessProbe", "readinessProbe", "startupProbe")}
    assert probes == {"/healthz", "/readyz"} and probes <= PROBE_PATHS
    app = create_app()
    routes = {r.resource.canonical for r in app.router.routes() if r.resource is not None}
    assert probes <= routes
    pre_stop = int(container["lifecycle"]["preStop"]["exec"]["command"][1])
    assert pod["terminationGracePeriodSeconds"] > pre_stop + params["graceful_timeout"] + 5
    assert service["spec"]["ports"][0]["targetPort"] == container["ports"][0]["name"]


# -- the stack, by hand ---------------------------------------------------------------------
@pytest.fixture
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Any:
    redis_testing = pytest.importorskip("modelplex_redis.testing")
    if redis_testing.find_redis_server() is None:
        pytest.skip("redis-server is not installed: `apt-get install redis-server`")
    server = redis_testing.RedisServer.start_new(tmp_path_factory.mktemp("redis"))
    yield server.url
    server.stop()


async def _postgres_like_compose(server: PostgresServer) -> str:
    """The compose file's database and user in ``server``; the store URL."""
    import asyncpg

    env = compose()["services"]["postgres"]["environment"]
    user, password, db = env["POSTGRES_USER"], env["POSTGRES_PASSWORD"], env["POSTGRES_DB"]
    conn = await asyncpg.connect(server.url)
    try:
        await conn.execute(f"CREATE ROLE {user} LOGIN PASSWORD '{password}'")
        await conn.execute(f"CREATE DATABASE {db} OWNER {user}")
    finally:
        await conn.close()
    return f"postgresql://{user}:{password}@127.0.0.1:{server.port}/{db}"


@pytest.mark.slow
async def test_the_stack_by_hand(postgres_server: PostgresServer, redis_url: str,
                                 tmp_path: Path) -> None:
    app = compose()["services"]["modelplex"]
    env_config = app["environment"]["MODELPLEX_CONFIG"]
    alias = "gemma-3-1b-it"
    async with FaultyUpstream(models=[alias]) as upstream:
        store = await _postgres_like_compose(postgres_server)
        text = (DEPLOY / "modelplex.toml").read_text()
        text = text.replace("postgresql://modelplex:modelplex@postgres:5432/modelplex", store)
        text = text.replace("redis://redis:6379/0", redis_url)
        assert "postgres:" not in text and "redis:6379" not in text
        config = tmp_path / "modelplex.toml"
        config.write_text(text)
        endpoints = json.loads(app["environment"]["MODELPLEX_OPENAI_ENDPOINTS"])
        endpoints["upstream"]["base_url"] = upstream.url + "/v1"
        (tmp_path / "openai.toml").write_text("")
        env = {**app["environment"], "MODELPLEX_CONFIG": str(config),
               "MODELPLEX_OPENAI_ENDPOINTS": json.dumps(endpoints),
               "MODELPLEX_OPENAI_CONFIG": str(tmp_path / "openai.toml"),
               "MODELPLEX_DATA_DIR": str(tmp_path / "data")}
        # the compose command, with this machine's config, a free port and 2 workers
        command = [str(config) if part == env_config else part
                   for part in app["command"][2:]]
        server = await asyncio.to_thread(ServeProcess, *command, "--port", "0",
                                         "--workers", "2", env=env)
        try:
            made = await Cli(drop=()).arun("keys", "create", "--name", "admin", "--admin",
                                           env=env)
            assert made.returncode == 0, made.stderr
            key = re.search(r"shown once\): (mpx-\S+)", made.stderr)
            assert key is not None
            headers = {"Authorization": f"Bearer {key.group(1)}"}
            async with aiohttp.ClientSession(base_url=server.url) as http:
                async with http.get("/readyz") as resp:
                    body = await resp.json()
                    assert resp.status == 200, body
                assert body["checks"]["state"]["backend"] == "redis"
                assert body["checks"]["store"]["detail"].startswith("PostgreSQL at")
                async with http.get("/v1/models") as resp:
                    assert resp.status == 401  # require_keys
                async with http.post("/v1/chat/completions", headers=headers, json={
                        "model": "fast", "messages": [{"role": "user", "content": "Hi"}]}
                                     ) as resp:
                    assert resp.status == 200, await resp.text()
                    assert (await resp.json())["choices"][0]["message"]["content"]
                async with http.get("/api/keys/me", headers=headers) as resp:
                    assert (await resp.json())["admin"] is True
            # the compose health check, pointed at this server
            check = app["healthcheck"]["test"][3].replace("http://127.0.0.1:8000", server.url)
            ran = await asyncio.to_thread(subprocess.run, [sys.executable, "-c", check],
                                          capture_output=True, text=True, timeout=60)
            assert ran.returncode == 0, ran.stderr
        finally:
            code = await asyncio.to_thread(server.stop)
        assert code == 0, server.text
