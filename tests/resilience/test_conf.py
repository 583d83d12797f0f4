"""Named policies from settings, and the system checks that reject a bad one."""

import pytest
from django.core.management import call_command
from django.core.management.base import SystemCheckError
from django.test import override_settings

from resilience import conf, policies
from resilience.checks import check_policies
from resilience.handler import InvalidPolicyError


def errors(raw):
    with override_settings(RESILIENCE_POLICIES=raw):
        return [(e.id, e.msg) for e in check_policies()]


def test_shipped_settings_pass_the_checks():
    """The project's own settings have no resilience problems."""
    call_command("check", "--fail-level", "WARNING")


def test_a_typo_in_a_key_is_named_with_a_suggestion():
    found = errors({"payments": {"RETRYS": {"MAX_ATTEMPTS": 2}}})
    assert found == [
        (
            "resilience.E001",
            "RESILIENCE_POLICIES[payments]: unknown key 'RETRYS'. Did you mean 'RETRY'?",
        )
    ]


def test_a_typo_inside_a_section_is_named_with_its_path():
    [(id, msg)] = errors({"payments": {"RETRY": {"MAX_ATEMPTS": 2}}})
    assert id == "resilience.E001"
    assert "payments.RETRY" in msg and "MAX_ATTEMPTS" in msg


@pytest.mark.parametrize(
    ("policy", "expected_id", "fragment"),
    [
        ({"RETRY": {"MAX_ATTEMPTS": 0}}, "resilience.E002", "RETRY.MAX_ATTEMPTS"),
        ({"RETRY": {"MAX_ATTEMPTS": 2.5}}, "resilience.E002", "whole number"),
        (
            {"TIMEOUT": {"READ": 5.0}, "DEADLINE": 2.0},
            "resilience.E003",
            "longer than the DEADLINE",
        ),
        (
            {
                "RETRY": {"BACKOFF_INITIAL": 3.0, "BACKOFF_MAX": 3.0},
                "DEADLINE": 3.0,
                "TIMEOUT": {"CONNECT": 0.5, "READ": 1.0},
            },
            "resilience.E004",
            "cannot fit",
        ),
        (
            {"CIRCUIT_BREAKER": {"SLIDING_WINDOW_SIZE": 4, "MINIMUM_NUMBER_OF_CALLS": 5}},
            "resilience.E005",
            "never trip",
        ),
        ({"CIRCUIT_BREAKER": {"STORAGE": "memcached://x"}}, "resilience.E006", "redis://"),
        ({"CIRCUIT_BREAKER": {"FAILURE_RATE_THRESHOLD": 0}}, "resilience.E002", "percentage"),
        ({"RETRY": {"RETRY_ON_STATUS": [404]}}, "resilience.E002", "never transient"),
        (
            {"CIRCUIT_BREAKER": {"IGNORE_EXCEPTIONS": ["no.such.Error"]}},
            "resilience.E002",
            "no.such",
        ),
        (
            {"BULKHEAD": {"MAX_CONCURRENT_CALLS": 0}},
            "resilience.E002",
            "BULKHEAD.MAX_CONCURRENT_CALLS",
        ),
        ({"ENABLED": "yes"}, "resilience.E002", "True or False"),
    ],
)
def test_impossible_values_are_rejected(policy, expected_id, fragment):
    found = errors({"payments": policy})
    assert [id for id, _ in found] == [expected_id], found
    assert fragment in found[0][1]
    assert "payments" in found[0][1]


def test_manage_py_check_fails_on_a_bad_policy():
    bad = {"payments": {"RETRY": {"MAX_ATTEMPTS": 0}}}
    with (
        override_settings(RESILIENCE_POLICIES=bad),
        pytest.raises(SystemCheckError, match="MAX_ATTEMPTS"),
    ):
        call_command("check")


def test_default_entry_is_merged_under_each_policy_section_by_section():
    raw = {
        "default": {"RETRY": {"MAX_ATTEMPTS": 5}, "DEADLINE": 8.0},
        "payments": {"RETRY": {"BACKOFF_INITIAL": 0.5}},
    }
    config = conf.build_config("payments", raw)
    assert (config.retry.max_attempts, config.retry.backoff_initial, config.deadline) == (
        5,
        0.5,
        8.0,
    )
    assert config.retry.backoff_max == conf.DEFAULTS["RETRY"]["BACKOFF_MAX"]


def test_building_a_bad_policy_raises_with_the_problem():
    with pytest.raises(Exception, match="MAX_ATTEMPTS"):
        conf.build_config("payments", {"payments": {"RETRY": {"MAX_ATTEMPTS": 0}}})


def test_policies_are_built_once_per_process_and_rebuilt_when_settings_change(settings):
    settings.RESILIENCE_POLICIES = {"payments": {"DEADLINE": 4.0, "TIMEOUT": {"READ": 1.5}}}
    first = policies["payments"]
    assert policies["payments"] is first
    assert first.config.deadline == 4.0
    settings.RESILIENCE_POLICIES = {"payments": {"DEADLINE": 6.0}}
    assert policies["payments"] is not first
    assert policies["payments"].config.deadline == 6.0


def test_an_unknown_policy_name_is_a_clear_error(settings):
    settings.RESILIENCE_POLICIES = {"payments": {}}
    with pytest.raises(InvalidPolicyError, match=r"'paymnets'.*configured: payments"):
        policies["paymnets"]


def test_bad_service_url_is_reported():
    with override_settings(SERVICES={"payments": "127.0.0.1:8002"}):
        assert [e.id for e in check_policies()] == ["resilience.E007"]


def test_a_typo_in_one_policy_does_not_hide_bad_values_in_another():
    raw = {"a": {"RETRYS": {}}, "b": {"DEADLINE": -1}}
    assert sorted(id for id, _ in errors(raw)) == ["resilience.E001", "resilience.E002"]
    with pytest.raises(Exception, match="DEADLINE"):
        conf.build_config("b", raw)
