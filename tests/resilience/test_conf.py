"""Named policies from settings, and the system checks that reject a bad one."""

import pytest
from django.core.management import call_command
from django.core.management.base import SystemCheckError
from django.test import override_settings

from resilience import conf, policies
from resilience.checks import check_policies, check_redis, check_services
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
        (
            {"RETRY": {"RETRY_ON_EXCEPTIONS": ["no.such.Error"]}},
            "resilience.E002",
            "RETRY.RETRY_ON_EXCEPTIONS",
        ),
        (
            # The wait for a bulkhead slot counts inside the deadline (a 1 s deadline once
            # answered after 1.36 s).
            {
                "TIMEOUT": {"CONNECT": 0.2, "READ": 0.6},
                "DEADLINE": 1.0,
                "BULKHEAD": {"MAX_WAIT": 0.5},
            },
            "resilience.E003",
            "MAX_WAIT + CONNECT + READ = 1.3 s",
        ),
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
    with override_settings(
        RESILIENCE_SERVICES={"payments": "127.0.0.1:8002"},
        RESILIENCE_POLICIES={"payments": {}},
    ):
        assert [e.id for e in check_services()] == ["resilience.E007"]


def test_a_host_projects_own_services_setting_is_none_of_our_business():
    """An unprefixed SERVICES (the host project's, of any shape) once failed our check."""
    with override_settings(
        SERVICES=["mail", "search"],
        RESILIENCE_SERVICES={"payments": "http://127.0.0.1:8002"},
        RESILIENCE_POLICIES={"payments": {}},
    ):
        assert check_services() == []
        assert check_policies() == []


def test_a_service_without_a_policy_and_a_policy_without_a_service_are_warned_about():
    with override_settings(
        RESILIENCE_SERVICES={"payments": "http://p", "search": "http://s"},
        RESILIENCE_POLICIES={"default": {}, "payments": {}, "pricing": {}},
    ):
        found = {(m.id, m.level) for m in check_services()}
        messages = " ".join(m.msg for m in check_services())
    assert {id for id, _ in found} == {"resilience.W001", "resilience.W002"}
    assert "'search'" in messages and "'pricing'" in messages


@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        ({"SOCKET_TIMOUT": 0.1}, "Did you mean 'SOCKET_TIMEOUT'?"),
        ({"PROBE_INTERVAL": 0}, "PROBE_INTERVAL"),
        ("fast", "must be a dict"),
    ],
)
def test_bad_redis_options_are_reported(value, fragment):
    with override_settings(RESILIENCE_REDIS=value):
        [error] = check_redis()
    assert error.id == "resilience.E008" and fragment in error.msg


def test_retry_on_exceptions_names_what_plain_code_may_retry(settings):
    settings.RESILIENCE_POLICIES = {
        "plain": {"RETRY": {"RETRY_ON_EXCEPTIONS": ["decimal.InvalidOperation"]}}
    }
    import decimal

    config = conf.build_config("plain")
    assert config.retry.retry_on_exceptions == (decimal.InvalidOperation,)


def test_a_typo_in_one_policy_does_not_hide_bad_values_in_another():
    raw = {"a": {"RETRYS": {}}, "b": {"DEADLINE": -1}}
    assert sorted(id for id, _ in errors(raw)) == ["resilience.E001", "resilience.E002"]
    with pytest.raises(Exception, match="DEADLINE"):
        conf.build_config("b", raw)
