"""The conformance suites catch a sloppy provider: each check it can get wrong, it fails.

The sloppy provider (data/sloppy_provider.py) runs through ``ProviderConformanceTests`` in a
separate pytest process; every check listed in SLOPPY_FAILS must fail. The few checks it
passes are the ones the base class guarantees for every provider (options validation, the
conversion of foreign exceptions, ...), listed in GUARANTEED.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

DATA = Path(__file__).parent / "data"

SUITE = '''
from modelplex.testing import ProviderConformanceTests
from sloppy_provider import SloppyProvider


class TestSloppy(ProviderConformanceTests):
    wire = "anthropic"
    fault_limit = 1.5

    def make_provider(self, base_url, *, timeouts, api_key):
        return SloppyProvider(base_url, api_key=api_key)
'''

#: The same provider, its author having configured no test upstream (no ``wire``).
SUITE_WITHOUT_WIRE = '''
import pytest

from modelplex.testing import ProviderConformanceTests
from sloppy_provider import SloppyProvider


class TestSloppy(ProviderConformanceTests):
    @pytest.fixture
    async def provider(self):
        async with SloppyProvider("http://127.0.0.1:9") as provider:
            yield provider

    @pytest.fixture
    def model(self):
        return "claude-x"
'''

#: Every check the sloppy provider must fail.
SLOPPY_FAILS = {
    # basic
    "test_usage_only_in_final_chunk", "test_prompt_tokens_reported",
    "test_finish_reason_in_vocabulary",
    "test_missing_model_raises_model_not_found",
    # options
    "test_max_tokens_limits_the_answer", "test_options_reach_the_wire",
    # streaming faults
    "test_stream_cut_short_raises_stream_error",
    "test_in_stream_error_is_raised_with_its_message",
    "test_connection_reset_keeps_partial_content", "test_malformed_event_raises_stream_error",
    "test_oversized_line_is_refused", "test_stall_mid_stream_times_out",
    "test_no_answer_times_out", "test_cancelled_stream_stops_upstream",
    # HTTP errors
    *(f"test_status_maps_to_error[{status}]"
      for status in ("400", "401", "429", "500", "503", "529")),
    "test_complete_maps_status", "test_unknown_model_raises_model_not_found",
    "test_api_key_is_sent_and_never_shown",
    # lifecycle and model management
    "test_aclose_closes_connections", "test_registered_through_entry_point",
}

#: Checks every Provider subclass passes because the base class does the work.
GUARANTEED = {
    "test_declares_itself", "test_stream_yields_text_chunks",
    "test_complete_equals_joined_stream", "test_cancelled_stream_leaves_provider_usable",
    "test_unsupported_operations_raise_clear_errors",
    "test_option_out_of_range_names_field_and_range", "test_unknown_option_is_rejected",
    "test_connection_refused", "test_aclose_twice_is_harmless",
}


def run_suite(folder: Path, suite: str) -> dict[str, tuple[str, str]]:
    """Each check's outcome (passed, failed or skipped) and message, for ``suite``."""
    shutil.copy(DATA / "sloppy_provider.py", folder)
    (folder / "test_sloppy.py").write_text(suite, encoding="utf-8")
    report = folder / "report.xml"
    subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                    "-o", "asyncio_mode=auto",
                    "-o", "asyncio_default_fixture_loop_scope=function",
                    "-W", "ignore::ResourceWarning",
                    "-W", "ignore::pytest.PytestUnraisableExceptionWarning",
                    f"--junitxml={report}", "--rootdir", str(folder), str(folder)],
                   cwd=folder, capture_output=True, text=True, timeout=300, check=False)
    results: dict[str, tuple[str, str]] = {}
    for case in ET.parse(report).getroot().iter("testcase"):
        outcome, message = "passed", ""
        for child in case:
            if child.tag in ("failure", "error"):
                outcome, message = "failed", child.attrib.get("message", "")
            elif child.tag == "skipped":
                outcome, message = "skipped", child.attrib.get("message", "")
        results[case.attrib["name"]] = (outcome, message)
    return results


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Each conformance check's outcome for the sloppy provider: passed, failed or skipped."""
    results = run_suite(tmp_path_factory.mktemp("sloppy"), SUITE)
    return {name: outcome for name, (outcome, _) in results.items()}


def test_sloppy_provider_fails_every_check_it_can_get_wrong(outcomes: dict[str, str]) -> None:
    passed = sorted(name for name in SLOPPY_FAILS if outcomes.get(name) != "failed")
    assert not passed, f"the sloppy provider did not fail: {passed}"


def test_only_what_the_base_class_guarantees_passes(outcomes: dict[str, str]) -> None:
    passing = {name for name, outcome in outcomes.items() if outcome == "passed"}
    assert passing == GUARANTEED


def test_every_check_is_accounted_for(outcomes: dict[str, str]) -> None:
    """A new check must be added to SLOPPY_FAILS (or GUARANTEED, or be skipped for a reason)."""
    skipped = {name for name, outcome in outcomes.items() if outcome == "skipped"}
    assert set(outcomes) == SLOPPY_FAILS | GUARANTEED | skipped
    assert skipped <= {"test_one_vector_per_text", "test_unknown_model",
                       "test_list_models_names_the_provider", "test_show_model",
                       "test_health_when_up", "test_health_when_down"}


def test_without_a_wire_the_upstream_checks_fail_saying_how_to_set_one(
        tmp_path: Path) -> None:
    """No silent skips: a class that configures no test upstream (and does not say
    ``in_process = True``) fails every check that needs one, naming the fix."""
    results = run_suite(tmp_path, SUITE_WITHOUT_WIRE)
    failed = {name: message for name, (outcome, message) in results.items()
              if outcome == "failed"}
    assert len(failed) >= 8, sorted(failed)
    told = [name for name, message in failed.items() if "sets no `wire`" in message]
    assert len(told) >= 8, failed
    skipped = {name: message for name, (outcome, message) in results.items()
               if outcome == "skipped"}
    assert all("test upstream" not in message for message in skipped.values()), skipped
