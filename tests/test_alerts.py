"""The Prometheus alert rules and the Grafana dashboard against promtool and the code.

- ``promtool check rules`` / ``check config`` / ``test rules`` on deploy/prometheus/: the rules
  parse, prometheus.yml loads them, and alerts_test.yml's unit tests pass (each alert fires
  for exactly the failing dependency and for no healthy one; docs/monitoring.md).
- Every metric the alerts and the dashboard query is one resilience/metrics.py declares.
  ``metric_names_in_queries()`` is reused by tests/e2e/test_stack.py, which checks the same
  names against the live /metrics of a running stack.

promtool comes with Debian's ``prometheus`` package; without it these tests fail, they never
skip: CI must run them.
"""

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from prometheus_client.metrics import MetricWrapperBase

from resilience import metrics as resilience_metrics

ROOT = Path(__file__).resolve().parents[1]
PROMETHEUS = ROOT / "deploy" / "prometheus"
ALERTS = PROMETHEUS / "alerts.yml"
ALERTS_TEST = PROMETHEUS / "alerts_test.yml"
PROMETHEUS_CONFIG = PROMETHEUS / "prometheus.yml"
DASHBOARD = ROOT / "deploy" / "grafana" / "dashboards" / "resilience.json"

# PromQL words that look like metric names: keywords, aggregation operators (which need not be
# followed by "(" directly: ``sum by (x) (...)``) and number literals.
_PROMQL_WORDS = {
    "and",
    "or",
    "unless",
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "bool",
    "offset",
    "atan2",
    "sum",
    "min",
    "max",
    "avg",
    "group",
    "stddev",
    "stdvar",
    "count",
    "count_values",
    "bottomk",
    "topk",
    "quantile",
    "limitk",
    "limit_ratio",
    "inf",
    "nan",
}
# A string literal or a comment, whichever starts first (a "#" in a string is no comment).
_STRING_OR_COMMENT = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`|#[^\n]*')
_LABEL_LIST = re.compile(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_IDENTIFIER = re.compile(r"(?<![\w:.$])([A-Za-z_:][\w:]*)(\s*\()?")
_LABEL_VALUES = re.compile(r"^\s*label_values\(\s*([A-Za-z_:][\w:]*)\s*[,)]")


def metric_names_in_expr(expr: str) -> set[str]:
    """The metric names a PromQL expression selects: what is left once strings, label
    matchers, ranges, label lists (by, on, ...), function calls and keywords are taken out."""
    expr = _STRING_OR_COMMENT.sub(lambda m: "" if m.group().startswith("#") else '""', expr)
    expr = re.sub(r"\{[^}]*\}", " ", expr)  # label matchers
    expr = re.sub(r"\[[^\]]*\]", " ", expr)  # ranges and subqueries
    expr = _LABEL_LIST.sub(r"\1", expr)
    return {
        word
        for word, call in _IDENTIFIER.findall(expr)
        if not call and word.lower() not in _PROMQL_WORDS
    }


def _dashboard_queries(dashboard: dict):
    """(where, PromQL) of every panel target and every query variable of a dashboard."""

    def panels(items):
        for panel in items:
            yield panel
            yield from panels(panel.get("panels", []))  # rows hold their panels

    for panel in panels(dashboard.get("panels", [])):
        for target in panel.get("targets", []):
            if target.get("expr"):
                yield f"{DASHBOARD.name}: panel {panel.get('title')!r}", target["expr"]
    for variable in dashboard.get("templating", {}).get("list", []):
        query = variable.get("query")
        query = query.get("query") if isinstance(query, dict) else query
        if variable.get("type") == "query" and isinstance(query, str) and query:
            label_values = _LABEL_VALUES.match(query)
            where = f"{DASHBOARD.name}: variable {variable.get('name')!r}"
            # label_values(metric, label): the label is not a metric.
            yield where, label_values.group(1) if label_values else query


def _alert_queries(rules: dict):
    for group in rules["groups"]:
        for rule in group["rules"]:
            name = rule.get("alert") or rule.get("record")
            yield (
                f"{ALERTS.name}: {name} ({rule.get('labels', {}).get('severity', '-')})",
                rule["expr"],
            )


def metric_names_in_queries() -> dict[str, set[str]]:
    """Every metric name that deploy/prometheus/alerts.yml and the Grafana dashboard query,
    with where each one is used: {name: {"alerts.yml: HighFailureRate (warning)", ...}}."""
    rules = yaml.safe_load(ALERTS.read_text())
    recorded = {
        rule["record"] for group in rules["groups"] for rule in group["rules"] if "record" in rule
    }
    dashboard = json.loads(DASHBOARD.read_text())
    used: dict[str, set[str]] = {}
    for where, expr in [*_alert_queries(rules), *_dashboard_queries(dashboard)]:
        for name in metric_names_in_expr(expr) - recorded:
            used.setdefault(name, set()).add(where)
    return used


def declared_metric_names() -> set[str]:
    """The names of the samples resilience/metrics.py's metrics expose: prometheus_client adds
    ``_total`` to a counter, ``_bucket``, ``_sum`` and ``_count`` to a histogram."""
    suffixes = {
        "counter": ("_total",),
        "histogram": ("_bucket", "_sum", "_count"),
        "summary": ("_sum", "_count"),
        "info": ("_info",),
    }
    from orders.metrics import ParkedOrders

    names = {family.name for family in ParkedOrders().describe()}  # a service's own gauge
    for metric in vars(resilience_metrics).values():
        if isinstance(metric, MetricWrapperBase):
            for family in metric.describe():
                names |= {family.name + suffix for suffix in suffixes.get(family.type, ("",))}
    return names


# -- promtool ---------------------------------------------------------------------------------


def promtool() -> str:
    """promtool's path; a failure (never a skip) when it is not installed."""
    path = shutil.which("promtool")
    if path is None:
        pytest.fail(
            "promtool not found: install Debian's `prometheus` package (apt-get install "
            "prometheus), which provides /usr/bin/promtool, to check the alert rules."
        )
    return path


def run_promtool(*args: str) -> str:
    done = subprocess.run(
        [promtool(), *args], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, f"promtool {' '.join(args)} failed:\n{output}"
    return output


def test_the_alert_rules_are_valid():
    output = run_promtool("check", "rules", str(ALERTS.relative_to(ROOT)))
    assert "SUCCESS" in output, output


def test_prometheus_loads_the_alert_rules():
    """prometheus.yml names alerts.yml (relative to itself, as in the container), and it
    loads: promtool checks the rule files a config names, offline."""
    output = run_promtool("check", "config", str(PROMETHEUS_CONFIG.relative_to(ROOT)))
    assert "1 rule files found" in output, output
    assert yaml.safe_load(PROMETHEUS_CONFIG.read_text())["rule_files"] == ["alerts.yml"]


def test_the_alert_unit_tests_pass():
    """Each alert fires for exactly the failing service and dependency, with exactly the
    expected labels and annotations, and for no healthy one (alerts_test.yml)."""
    output = run_promtool("test", "rules", str(ALERTS_TEST.relative_to(ROOT)))
    assert "SUCCESS" in output, output


# -- the rules' shape ---------------------------------------------------------------------------


def alert_rules(group: str | None = None) -> list[dict]:
    """The alerts of one group (``resilience``: about a call edge; ``orders``: about the
    service's own work), or of all."""
    rules = yaml.safe_load(ALERTS.read_text())
    return [
        rule
        for g in rules["groups"]
        if group in (None, g["name"])
        for rule in g["rules"]
        if "alert" in rule
    ]


def test_every_alert_has_a_severity_a_summary_and_a_description():
    for rule in alert_rules():
        assert rule["labels"]["severity"] in ("warning", "critical"), rule["alert"]
        assert {"summary", "description"} <= set(rule["annotations"]), rule["alert"]
    assert {rule["alert"] for rule in alert_rules("orders")} == {"OrdersNeedAttention"}


def test_every_alert_about_a_call_names_both_ends():
    for rule in alert_rules("resilience"):
        # The caller and the dependency are the only labels left by the aggregation.
        assert "by (service, dependency)" in rule["expr"], rule["alert"]
        assert '"dependency", "$1", "name", "(.*)"' in rule["expr"], rule["alert"]


def test_the_design_notes_alerts_are_there():
    by_name = {}
    for rule in alert_rules():
        by_name.setdefault(rule["alert"], []).append(rule)
    (breaker_open,) = by_name["CircuitBreakerOpen"]
    assert (breaker_open["for"], breaker_open["labels"]["severity"]) == ("0m", "critical")
    failure_rate = {rule["labels"]["severity"]: rule for rule in by_name["HighFailureRate"]}
    assert failure_rate["warning"]["for"] == failure_rate["critical"]["for"] == "1m"
    assert failure_rate["warning"]["expr"].rstrip().endswith("> 30")
    assert failure_rate["critical"]["expr"].rstrip().endswith("> 50")
    assert {"LatencyNearTimeout", "RetrySurge", "FallbackSurge"} <= set(by_name)


def test_every_alert_and_severity_is_unit_tested_firing_with_both_ends_labelled():
    tests = yaml.safe_load(ALERTS_TEST.read_text())["tests"]
    about_a_service = {rule["alert"] for rule in alert_rules("orders")}
    fired = set()
    for test in tests:
        for check in test.get("alert_rule_test", []):
            for alert in check.get("exp_alerts") or []:
                labels = alert["exp_labels"]
                ends = (
                    {"service"}
                    if check["alertname"] in about_a_service
                    else {"service", "dependency"}
                )
                assert set(labels) == {"severity", *ends}, (test["name"], labels)
                fired.add((check["alertname"], labels["severity"]))
    expected = {(rule["alert"], rule["labels"]["severity"]) for rule in alert_rules()}
    assert expected <= fired, f"never seen firing in alerts_test.yml: {expected - fired}"


# -- metric names -------------------------------------------------------------------------------


def test_metric_names_are_found_in_promql():
    expr = """
        histogram_quantile(0.99, sum by (service, name, le) (
          rate(a_seconds_bucket{outcome="success", name=~"x|y"}[5m] offset 1m)))
        >= on (service, name) group_left (setting) 0.8 * max by (service, name) (b_setting)
        and on (service) label_replace(c_total, "d", "$1", "name", "(.*)") > bool 1e3
        or sum without (pid) (rate(d_total[$__rate_interval])) # e_total's comment
        unless f_info{path="#g_total"}
    """
    assert metric_names_in_expr(expr) == {
        "a_seconds_bucket",
        "b_setting",
        "c_total",
        "d_total",
        "f_info",
    }


def test_every_metric_the_alerts_and_the_dashboard_query_is_declared():
    used = metric_names_in_queries()
    # The extraction finds what these queries are about (it is not silently finding nothing).
    assert {
        "resilience_circuitbreaker_state",
        "resilience_circuitbreaker_process_state",
        "resilience_circuitbreaker_failure_rate",
        "resilience_call_duration_seconds_bucket",
        "resilience_call_duration_seconds_count",
        "resilience_policy_setting",
        "resilience_retry_calls_total",
        "resilience_retry_attempts_total",
        "resilience_retry_budget_exhausted_total",
        "resilience_fallback_calls_total",
        "resilience_circuitbreaker_calls_total",
        "resilience_bulkhead_available_concurrent_calls",
    } <= set(used)
    declared = declared_metric_names()
    unknown = {name: sorted(where) for name, where in used.items() if name not in declared}
    assert unknown == {}, f"queried but not declared in resilience/metrics.py: {unknown}"
