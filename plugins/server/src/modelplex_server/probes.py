"""Probes for orchestrators: ``GET /healthz`` (liveness) and ``GET /readyz`` (readiness).

Both are unauthenticated and cheap, for Kubernetes probes, load balancers and
``docker compose`` health checks:

- ``/healthz`` answers ``200 {"status": "ok", "pid": ...}`` as long as the process's event
  loop runs (``pid``: which worker answered); it touches nothing else (a liveness probe that
  checks dependencies restarts healthy servers when a database blips).
- ``/readyz`` answers ``200`` when the server can do its work and ``503`` when it cannot,
  with one entry per part saying which is not::

      {"ready": false, "checks": {
          "config": {"ok": true, "detail": "3 named models, 2 keys"},
          "store": {"ok": false, "detail": "PostgreSQL at postgresql://db:5432/mpx: ..."},
          "state": {"ok": true, "detail": "redis at redis://cache:6379/0"},
          "providers": {"ok": true, "detail": "2 of 3 healthy", "healthy": ["fast", ...]}}}

  The parts: ``config`` (loaded and validated: always true once the server runs),
  ``store`` (the conversation store answers a trivial query), ``state`` (the shared state
  backend, Redis; while it is unreachable the server keeps serving with per-process limits:
  the entry says ``degraded`` and the probe stays ``200``, since taking every replica out of
  service because the limiter's backend blipped would turn a limiter problem into an
  outage), and ``providers`` (at least one provider passed its last health check; the
  health monitor's results are used, and a check runs at most every ``PROVIDER_RECHECK``
  seconds when there are none).
"""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any

from aiohttp import web

from modelplex.http import dumps
from modelplex_server.gateway import GATEWAY, Gateway

__all__ = ["PROBE_PATHS", "PROVIDER_RECHECK", "STORE_TIMEOUT", "add_routes", "readiness"]

#: The probe paths (public: no key needed).
PROBE_PATHS = frozenset({"/healthz", "/readyz"})
#: Seconds the store has to answer the readiness query.
STORE_TIMEOUT = 2.0
#: Seconds between provider health checks made by ``/readyz`` itself (when the monitor has
#: no result yet or is off).
PROVIDER_RECHECK = 10.0

_healthz: tuple[int, bytes] = (0, b"")


async def healthz(request: web.Request) -> web.Response:
    """``GET /healthz``: the process lives (and its pid)."""
    global _healthz
    pid, body = _healthz
    if pid != os.getpid():
        _healthz = pid, body = os.getpid(), dumps({"status": "ok", "pid": os.getpid()})
    return web.Response(body=body, content_type="application/json",
                        headers={"Cache-Control": "no-store"})


class _ProviderChecks:
    """When ``/readyz`` last checked providers itself, one check at a time."""

    def __init__(self) -> None:
        self.lock = asyncio.Lock()
        self.checked_at = -1e9


_CHECKS: web.AppKey[_ProviderChecks] = web.AppKey("modelplex_probe_checks", _ProviderChecks)


async def _store(gateway: Gateway) -> dict[str, Any]:
    store = gateway.conversations
    try:
        await asyncio.wait_for(store.ping(), STORE_TIMEOUT)
    except TimeoutError:
        return {"ok": False, "detail": f"{store.describe()}: no answer within "
                                       f"{STORE_TIMEOUT:g} s"}
    except Exception as err:
        return {"ok": False, "detail": f"{store.describe()}: {type(err).__name__}: {err}"}
    return {"ok": True, "detail": store.describe()}


async def _state(gateway: Gateway) -> dict[str, Any]:
    limits = gateway.limits
    report = await limits.readiness()
    return {"ok": True, **report}


async def _providers(request: web.Request, gateway: Gateway) -> dict[str, Any]:
    registry = gateway.registry
    names = registry.provider_names()
    known = registry.last_health()
    if not any(known.get(n) is not None for n in names):
        checks = request.app[_CHECKS]
        async with checks.lock:
            known = registry.last_health()
            now = time.monotonic()
            if not any(known.get(n) is not None for n in names) \
                    and now - checks.checked_at >= PROVIDER_RECHECK:
                checks.checked_at = now
                known = await registry.check_health()
    healthy = sorted(n for n in names if (h := known.get(n)) is not None and h.status.healthy)
    checked = [n for n in names if known.get(n) is not None]
    if healthy:
        return {"ok": True, "detail": f"{len(healthy)} of {len(names)} healthy",
                "healthy": healthy}
    if not names:
        return {"ok": False, "detail": "no providers are installed", "healthy": []}
    if not checked:
        return {"ok": False, "detail": "no provider has been checked yet", "healthy": []}
    failures = {n: known[n].status.detail for n in checked}
    return {"ok": False, "detail": f"none of {len(names)} providers is healthy",
            "healthy": [], "errors": failures}


def _config(gateway: Gateway) -> dict[str, Any]:
    settings = gateway.settings
    named = len(gateway.resolver.named_models)
    return {"ok": True, "detail": f"{named} named models, {len(settings.keys)} keys"}


async def readiness(request: web.Request) -> tuple[bool, dict[str, dict[str, Any]]]:
    """Whether the server is ready, and the check of each part."""
    gateway = request.app[GATEWAY]
    store, state, providers = await asyncio.gather(
        _store(gateway), _state(gateway), _providers(request, gateway))
    checks = {"config": _config(gateway), "store": store, "state": state,
              "providers": providers}
    return all(c["ok"] for c in checks.values()), checks


async def readyz(request: web.Request) -> web.Response:
    """``GET /readyz``: 200 when ready, else 503; the body tells which part is not."""
    ready, checks = await readiness(request)
    return web.Response(body=dumps({"ready": ready, "checks": checks}),
                        status=200 if ready else 503, content_type="application/json",
                        headers={"Cache-Control": "no-store"})


def add_routes(app: web.Application) -> None:
    """Register ``/healthz`` and ``/readyz``."""
    app[_CHECKS] = _ProviderChecks()
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
