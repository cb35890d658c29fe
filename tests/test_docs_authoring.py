"""docs/writing-a-provider.md documents the whole authoring kit.

Every public name of ``modelplex.testing`` (and its pytest fixtures), every conformance check
and setting, every ``FaultyUpstream`` method, fault and ``Reply`` field, the stream helpers and
every finish reason are named on the page (the plugin hooks are checked by test_docs.py).
"""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import attrs
import pytest

import modelplex.testing
from modelplex import finish, streams
from modelplex.testing import (
    ConformanceBase,
    FaultyUpstream,
    ProviderConformanceTests,
    Reply,
    pytest_plugin,
    upstream,
)

PAGE = (Path(__file__).resolve().parent.parent / "docs" / "writing-a-provider.md").read_text(
    encoding="utf-8")


def documented(name: str) -> bool:
    """``name`` appears in code style on the page (alone or as a call or attribute)."""
    return re.search(rf"`[^`\n]*\b{re.escape(name)}\b[^`\n]*`", PAGE) is not None


def public(names: object) -> list[str]:
    return sorted(n for n in names if not n.startswith("_"))  # type: ignore[attr-defined]


@pytest.mark.parametrize("name", modelplex.testing.__all__)
def test_public_name_of_modelplex_testing_is_documented(name: str) -> None:
    assert documented(name), f"modelplex.testing.{name} is not on writing-a-provider.md"


@pytest.mark.parametrize("name", ["modelplex_plugins", "register_plugin", "Replay"])
def test_fixtures_and_replay_are_documented(name: str) -> None:
    assert hasattr(pytest_plugin, name) or name == "Replay"
    assert documented(name)


def _checks() -> list[str]:
    return sorted({name for name in dir(ProviderConformanceTests) if name.startswith("test_")})


def test_checks_found() -> None:
    assert len(_checks()) >= 30


@pytest.mark.parametrize("check", _checks())
def test_every_conformance_check_is_listed(check: str) -> None:
    assert f"| `{check}` |" in PAGE, f"the suites table lacks {check}"


def _settings() -> list[str]:
    hooks = ["make_provider", "prepare", "assert_stream_stopped"]
    annotations = inspect.get_annotations(ConformanceBase)
    return sorted(set(hooks) | {n for n in annotations if not n.startswith("_")} - {"pytestmark"})


@pytest.mark.parametrize("setting", _settings())
def test_every_conformance_setting_is_documented(setting: str) -> None:
    assert documented(setting)


@pytest.mark.parametrize("name", sorted(
    {n for n, v in vars(FaultyUpstream).items() if not n.startswith("_")
     and (callable(v) or isinstance(v, property))}
    | {"faults", "received", "requests", "disconnects", "active", "url", "models",
       "require_headers", "routes", "redirect_to"}))
def test_every_upstream_feature_is_documented(name: str) -> None:
    assert documented(name)


@pytest.mark.parametrize("fault", re.findall(r"^``(\w+)``", upstream.__doc__ or "", re.M))
def test_every_fault_is_documented(fault: str) -> None:
    assert f"`{fault}`" in PAGE


@pytest.mark.parametrize("field", [f.name for f in attrs.fields(Reply)])
def test_every_reply_field_is_documented(field: str) -> None:
    assert documented(field)


@pytest.mark.parametrize("name", [*streams.__all__, *finish.__all__])
def test_stream_and_finish_helpers_are_documented(name: str) -> None:
    assert documented(name)


@pytest.mark.parametrize("reason", sorted(finish.FINISH_REASONS))
def test_every_finish_reason_is_in_the_table(reason: str) -> None:
    assert f"| `{reason}` |" in PAGE
