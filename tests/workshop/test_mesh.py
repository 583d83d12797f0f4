"""`manage.py mesh export istio`: the policies in Istio's words, valid, committed, and honest
about what the mesh cannot do; and lab 09's checkpoint."""

import hashlib
import json
from io import StringIO
from pathlib import Path

import pytest
import yaml
from django.core.management import CommandError, call_command

from resilience import conf
from resilience.breaker import CircuitBreaker
from resilience.clock import VirtualClock
from workshop import mesh
from workshop.labs import app_vs_mesh

ROOT = Path(__file__).resolve().parents[2]
COMMITTED = ROOT / "deploy/k8s/overlays/istio/mesh-rules.yaml"
SHARED_SCHEMAS = ROOT.parent / "shared/schemas/istio-crds.yaml"
EDGES = {
    ("gateway", "inventory"),
    ("gateway", "orders"),
    ("gateway", "recommendations"),
    ("orders", "inventory"),
    ("orders", "notifications"),
    ("orders", "payments"),
    ("orders", "recommendations"),  # the worker records each booking: on no request path
}


def export(*args: str) -> tuple[str, str]:
    out, err = StringIO(), StringIO()
    call_command("mesh", "export", "istio", *args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


def documents(text: str) -> list[dict]:
    return [d for d in yaml.safe_load_all(text) if d]


def of_kind(docs: list[dict], kind: str) -> dict[str, dict]:
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == kind}


def schema_problems(docs: list[dict]) -> list[str]:
    try:
        return mesh.schema_problems(docs)
    except ImportError as missing:
        pytest.fail(str(missing))


def policy(**sections) -> conf.PolicyConfig:
    return conf.build_config("p", {"p": sections})


def test_the_istio_overlay_holds_what_mesh_export_istio_prints_now():
    rules, _ = export()
    assert COMMITTED.read_text() == rules, (
        "the policies changed: .venv/bin/python manage.py mesh export istio > "
        "deploy/k8s/overlays/istio/mesh-rules.yaml"
    )


@pytest.mark.parametrize("app_policies", ["on", "off"])
def test_the_exported_rules_are_valid_istio(app_policies):
    rules = [
        d
        for d in documents(export("--app-policies", app_policies)[0])
        if d["apiVersion"] == mesh.ISTIO_API
    ]
    assert rules and schema_problems(rules) == []


# sha256 of the v1 DestinationRule and VirtualService schemas (JSON, sorted keys) of Istio's
# CRDs as ../shared/schemas/istio-crds.yaml gives them: a clone without shared/ beside it still
# checks the committed copy against what was compared once.
ISTIO_V1_SHA256 = "16ac9ffd565740e1c362cebbd50dbfc2d53074a2100cc68c222ab649a1145c54"


def _v1(path: Path) -> dict[str, dict]:
    return {
        crd["spec"]["names"]["kind"]: next(v for v in crd["spec"]["versions"] if v["name"] == "v1")
        for crd in yaml.safe_load_all(path.read_text())
        if crd and crd["spec"]["names"]["kind"] in ("DestinationRule", "VirtualService")
    }


def _digest(schemas: dict) -> str:
    return hashlib.sha256(json.dumps(schemas, sort_keys=True).encode()).hexdigest()


def test_the_schemas_are_istios_own():
    """deploy/k8s/schemas keeps Istio's v1 DestinationRule and VirtualService as published."""
    committed = _v1(mesh.ISTIO_SCHEMAS)
    assert set(committed) == {"DestinationRule", "VirtualService"}
    assert _digest(committed) == ISTIO_V1_SHA256
    if SHARED_SCHEMAS.exists():  # beside the repository in the workplace, not in every clone
        assert committed == _v1(SHARED_SCHEMAS)


def test_the_schema_check_refuses_what_istio_would():
    """Unknown fields (which the API server would drop in silence), bad durations, wrong types."""
    rule = {
        "apiVersion": mesh.ISTIO_API,
        "kind": "DestinationRule",
        "metadata": {"name": "typo"},
        "spec": {
            "host": "payments",
            "trafficPolicy": {
                "outlierDetection": {"consecutive5xxError": 5, "baseEjectionTime": "30"},
                "connectionPool": {"tcp": {"maxConnections": "ten"}},
            },
        },
    }
    problems = schema_problems([rule, {**rule, "apiVersion": "networking.istio.io/v9"}])
    assert len(problems) == 4
    assert "'consecutive5xxError' was unexpected" in " ".join(problems)
    assert "'30' is not a duration" in " ".join(problems)
    assert "'ten' is not of type 'integer'" in " ".join(problems)
    assert "no Istio schema for networking.istio.io/v9" in problems[-1]


def test_every_call_between_services_gets_its_routes_and_destination_rules():
    docs = documents(export()[0])
    assert set(of_kind(docs, "DestinationRule")) == {f"{a}-to-{b}" for a, b in EDGES}
    for callee, service in of_kind(docs, "VirtualService").items():
        *routes, others = service["spec"]["http"]
        callers = {a for a, b in EDGES if b == callee}
        assert {r["match"][0]["sourceLabels"][mesh.CALLER_LABEL] for r in routes} == callers
        # Anyone else (the control room, Prometheus) still reaches the service.
        assert others == {"name": "others", "route": [{"destination": {"host": callee}}]}


def test_orders_policy_for_payments_in_istios_words():
    """Retries counted without the first attempt, the deadline as the route's timeout, the
    bulkhead per pod, the breaker as a run of failures, the budget as retries in flight."""
    docs = documents(export()[0])
    route = next(
        r
        for r in of_kind(docs, "VirtualService")["payments"]["spec"]["http"]
        if r["name"] == "from-orders"
    )
    assert route["timeout"] == "4s"
    assert route["retries"] == {
        "attempts": 2,
        "perTryTimeout": "2.5s",
        "retryOn": "connect-failure,refused-stream,reset,429,502,503,504",
        "backoff": "0.5s",
    }
    traffic = of_kind(docs, "DestinationRule")["orders-to-payments"]["spec"]["trafficPolicy"]
    assert traffic == {
        "connectionPool": {
            "tcp": {"maxConnections": 20, "connectTimeout": "1s"},
            "http": {"http1MaxPendingRequests": 20, "http2MaxRequests": 20},
        },
        "outlierDetection": {
            "consecutive5xxErrors": 5,
            "interval": "1s",
            "baseEjectionTime": "30s",
            "maxEjectionPercent": 100,
            "minHealthPercent": 0,
        },
        "retryBudget": {"percent": 20.0, "minRetryConcurrency": 3},
    }


def test_a_policy_without_retries_turns_istios_own_retries_off():
    t = mesh.translate(
        policy(TIMEOUT={"CONNECT": 0.3, "READ": 0.7}, DEADLINE=2.0, RETRY={"MAX_ATTEMPTS": 1})
    )
    assert t.route == {"timeout": "1s", "retries": {"attempts": 0}}
    assert "retryBudget" not in t.traffic_policy
    assert "idempotency-aware retries" not in [row.setting for row in t.missing]


@pytest.mark.parametrize(
    "threshold, window, minimum", [(50, 10, 5), (50, 20, 5), (100, 10, 5), (25, 10, 5), (60, 10, 2)]
)
def test_outlier_detection_ejects_after_the_shortest_run_that_always_opens_the_breaker(
    threshold, window, minimum
):
    breaker = {
        "FAILURE_RATE_THRESHOLD": threshold,
        "SLIDING_WINDOW_SIZE": window,
        "MINIMUM_NUMBER_OF_CALLS": minimum,
    }
    config = policy(CIRCUIT_BREAKER=breaker)

    def failures_to_open(successes_before: int) -> int:
        real = CircuitBreaker("p", config.circuit_breaker, clock=VirtualClock())
        for _ in range(successes_before):
            real.call(lambda: None)
        failures = 0
        while real.current_state == "closed":
            failures += 1
            with pytest.raises(ZeroDivisionError):
                real.call(lambda: 1 / 0)
        return failures

    worst = max(failures_to_open(successes) for successes in range(window + 1))
    assert (
        mesh.translate(config).traffic_policy["outlierDetection"]["consecutive5xxErrors"] == worst
    )


def test_the_bulkhead_is_sized_per_pod():
    t = mesh.translate(policy(BULKHEAD={"MAX_CONCURRENT_CALLS": 5, "MAX_WAIT": 0.0}), workers=3)
    assert t.traffic_policy["connectionPool"]["tcp"]["maxConnections"] == 15
    # 0 would mean "unlimited" to Istio: one waiting request is the nearest to none.
    assert t.traffic_policy["connectionPool"]["http"] == {
        "http1MaxPendingRequests": 1,
        "http2MaxRequests": 15,
    }


def test_the_table_says_what_the_mesh_cannot_do_for_every_policy():
    _, table = export()
    sections = table.split("\npolicy ")[1:]
    assert [s.split(":")[0] for s in sections] == [
        "'inventory'",
        "'orders'",
        "'recommendations'",
        "'notifications'",
        "'payments'",
    ]
    for section in sections:
        for heading in ("  exact\n", "  approximate\n", "  no mesh equivalent\n"):
            assert heading in section
        gaps = section.split("no mesh equivalent")[1]
        for gap in ("fallback", "SLOW_CALL_RATE_THRESHOLD", "HALF_OPEN", "deadline propagation"):
            assert gap in gaps, (section.split("\n")[0], gap)
    assert "idempotency-aware retries" in sections[-1]  # payments: the one with retries on POST


def test_the_table_shows_what_both_layers_multiply():
    _, table = export()
    assert "gateway -> orders -> payments" in table
    line = next(line for line in table.splitlines() if "gateway -> orders -> payments" in line)
    assert line.split()[-6:] == ["app", "x3,", "mesh", "x3,", "both", "x9"]
    assert "both layers run" in table


def test_app_policies_off_also_writes_the_configmap_that_turns_them_off():
    rules, table = export("--app-policies", "off")
    config_map = documents(rules)[-1]
    assert config_map == {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": mesh.APP_POLICIES_CONFIGMAP},
        "data": {"RESILIENCE_ENABLED": "0"},
    }
    assert "30 s timeout" in table and "fallbacks are gone" in table


def test_out_writes_the_rules_and_prints_the_table(tmp_path):
    out = StringIO()
    call_command("mesh", "export", "istio", "--out", str(tmp_path / "mesh/istio.yaml"), stdout=out)
    assert (tmp_path / "mesh/istio.yaml").read_text() == COMMITTED.read_text()
    assert "no mesh equivalent" in out.getvalue()


def test_an_unknown_mesh_names_the_meshes_there_are():
    with pytest.raises(CommandError, match="unknown mesh 'linkerd2': one of istio"):
        call_command("mesh", "export", "linkerd2")


class TestLabCheckpoint:
    @pytest.fixture
    def repository(self, settings, tmp_path):
        settings.BASE_DIR = tmp_path
        settings.VAR_DIR = tmp_path / "var"
        return tmp_path

    def exported(self, repository: Path, *args: str) -> Path:
        path = repository / app_vs_mesh.EXPORT
        call_command("mesh", "export", "istio", "--out", str(path), *args, stdout=StringIO())
        return path

    def test_nothing_exported_yet_says_how(self, repository):
        assert app_vs_mesh.checkpoint() == [
            f"{app_vs_mesh.EXPORT} does not exist: export the rules with `{app_vs_mesh.COMMAND}`"
        ]

    @pytest.mark.parametrize("args", [(), ("--app-policies", "off")])
    def test_exported_rules_pass(self, repository, args):
        self.exported(repository, *args)
        assert app_vs_mesh.checkpoint() == []

    def test_rules_that_no_longer_match_the_policies_fail(self, repository):
        path = self.exported(repository)
        path.write_text(path.read_text().replace("timeout: 4s", "timeout: 3s"))
        [problem] = app_vs_mesh.checkpoint()
        assert "is not what the current policies export" in problem

    def test_rules_istio_would_refuse_fail(self, repository):
        path = self.exported(repository)
        path.write_text(path.read_text().replace("baseEjectionTime: 30s", "baseEjectionTime: 30"))
        problems = app_vs_mesh.checkpoint()
        assert problems[0] == (
            f"{app_vs_mesh.EXPORT}: DestinationRule orders-to-payments: "
            "spec.trafficPolicy.outlierDetection.baseEjectionTime: 30 is not of type 'string'"
        )
        assert "is not what the current policies export" in problems[-1]

    def test_every_policy_lists_what_only_the_app_can_do(self):
        assert app_vs_mesh.unlisted_gaps() == []
