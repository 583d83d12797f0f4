"""Every service's resilience policies as service-mesh rules: ``manage.py mesh export istio``.

A policy belongs to the caller: the gateway's ``inventory`` policy is how the gateway calls
inventory. Istio says the same with a DestinationRule per caller and callee that selects the
caller's pods (a connection pool for the bulkhead, outlier detection for the breaker, a retry
budget) and a VirtualService per callee with a route per caller (timeout and retries). Beside
the rules goes a table, policy by policy, of what translated exactly, what only approximately,
and what the mesh cannot do at all.

The rules need Istio 1.27 or later (``retries.backoff`` came in 1.26, ``retryBudget`` in 1.27).
"""

import math
import re
import textwrap
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from booking.budgets import ENTRY, SERVICES, Graph
from resilience.conf import BASELINE_TIMEOUT, PolicyConfig

MESHES = ("istio",)
ISTIO_API = "networking.istio.io/v1"
# Every pod carries the name of the service whose settings it runs (the orders worker: orders),
# so a caller's rules follow it into every process that calls with its policies.
CALLER_LABEL = "app.kubernetes.io/name"
# gunicorn processes per pod (booking/gunicorn_conf.py's default, and deploy/k8s's): the app's
# bulkhead is per process, a sidecar's connection pool per pod.
DEFAULT_WORKERS = 2
# Every Deployment of deploy/k8s reads it after booking-config, so its values win.
APP_POLICIES_CONFIGMAP = "booking-app-policies"
ISTIO_SCHEMAS = Path(__file__).resolve().parents[1] / "deploy/k8s/schemas/istio-networking.yaml"
# Connection errors and timeouts, which the app retries whatever RETRY_ON_STATUS says.
RETRY_ON_TRANSPORT = ("connect-failure", "refused-stream", "reset")
WIDTH = 100  # of the table's lines
# The one CEL rule of Istio's schemas that the rules' values can break.
DURATION_RULE = "duration(self) >= duration('1ms')"


@dataclass(frozen=True)
class Edge:
    caller: str
    callee: str
    policy: PolicyConfig


class UnknownMesh(ValueError):
    """There is no export for this mesh."""


def edges() -> list[Edge]:
    """Every pair of services that talk, with the caller's policy for the callee.

    Callees come from ``CALL_PATHS`` and ``SERVICE_DEPENDENCIES``: some calls are on no request
    path (the orders worker records each booking at recommendations).
    """
    graph = Graph.from_settings_modules()
    found = []
    for caller in SERVICES:
        callees = {c for calls in graph.paths(caller).values() for c in calls}
        callees |= set(getattr(graph.settings[caller], "SERVICE_DEPENDENCIES", []))
        found += [Edge(caller, callee, graph.policy(caller, callee)) for callee in sorted(callees)]
    return found


@dataclass(frozen=True)
class Line:
    """One row of the table: the app's setting, the mesh's rule, and how they differ."""

    setting: str
    rule: str
    note: str = ""


@dataclass
class Translation:
    """One policy in Istio's words: its route, its traffic policy, and the table's rows."""

    route: dict = field(default_factory=dict)
    traffic_policy: dict = field(default_factory=dict)
    exact: list[Line] = field(default_factory=list)
    approximate: list[Line] = field(default_factory=list)
    missing: list[Line] = field(default_factory=list)


def duration(seconds: float) -> str:
    """Seconds as a Go duration, the form Istio reads: 2.5 -> "2.5s"."""
    return f"{seconds:.3f}".rstrip("0").rstrip(".") + "s"


def translate(policy: PolicyConfig, *, workers: int = DEFAULT_WORKERS) -> Translation:
    """``policy`` in Istio's words, whatever its ENABLED says: the mesh is to do what the app
    would do with it on."""
    t = Translation()
    _bulkhead(policy, workers, t)
    _breaker(policy, t)
    _timeouts_and_retries(policy, t)
    _only_the_app_can(policy, t)
    return t


def _timeouts_and_retries(p: PolicyConfig, t: Translation) -> None:
    attempt = p.timeout.connect + p.timeout.read
    retries = p.retry.max_attempts - 1
    t.traffic_policy["connectionPool"]["tcp"]["connectTimeout"] = duration(p.timeout.connect)
    t.exact.append(
        Line(
            f"TIMEOUT.CONNECT {p.timeout.connect:g} s",
            f"tcp.connectTimeout: {duration(p.timeout.connect)}",
        )
    )
    t.exact.append(
        Line(
            f"RETRY.MAX_ATTEMPTS {p.retry.max_attempts}",
            f"retries.attempts: {retries}",
            "Istio counts retries, not attempts"
            + ("" if retries else "; 0 turns off the retries Istio makes by default"),
        )
    )
    if not retries:
        # Istio drops a retry policy of 0 attempts, perTryTimeout with it: one limit is left for
        # the one attempt, whichever of the two the app would hit first.
        limit = min(p.deadline, attempt)
        t.route["timeout"] = duration(limit)
        t.route["retries"] = {"attempts": 0}
        t.exact.append(
            Line(
                f"DEADLINE {p.deadline:g} s, CONNECT + READ {attempt:g} s",
                f"timeout: {duration(limit)}",
                "one attempt: the first limit it meets",
            )
        )
        return
    statuses = sorted(p.retry.retry_on_status)
    retry_on = ",".join([*RETRY_ON_TRANSPORT, *map(str, statuses)])
    t.route["timeout"] = duration(p.deadline)
    t.route["retries"] = {
        "attempts": retries,
        "perTryTimeout": duration(attempt),
        "retryOn": retry_on,
        "backoff": duration(p.retry.backoff_initial),
    }
    t.exact.append(
        Line(
            f"DEADLINE {p.deadline:g} s",
            f"timeout: {duration(p.deadline)}",
            "the whole call: attempts and backoff",
        )
    )
    t.exact.append(
        Line(f"CONNECT + READ {attempt:g} s", f"retries.perTryTimeout: {duration(attempt)}")
    )
    t.approximate.append(
        Line(
            f"RETRY.RETRY_ON_STATUS {', '.join(map(str, statuses))}",
            f"retries.retryOn: {retry_on}",
            "Retry-After is not honoured; a 503 that names the callee's own dependency "
            "(X-Dependency-Unavailable) is retried, which the app never does",
        )
    )
    t.approximate.append(
        Line(
            f"RETRY.BACKOFF_INITIAL {p.retry.backoff_initial:g} s, "
            f"_MULTIPLIER {p.retry.backoff_multiplier:g}, _MAX {p.retry.backoff_max:g} s",
            f"retries.backoff: {duration(p.retry.backoff_initial)}",
            "Envoy's jittered backoff doubles from it up to 10 x it, whatever MULTIPLIER and MAX say",
        )
    )
    # Little's law: a floor of R retries a second, each lasting at most one attempt, keeps at
    # most R x attempt retries in flight, which is what Envoy's floor counts.
    floor = math.ceil(p.retry.budget_min_retries_per_second * attempt)
    percent = round(p.retry.budget_ratio * 100, 2)
    t.traffic_policy["retryBudget"] = {"percent": percent, "minRetryConcurrency": floor}
    t.approximate.append(
        Line(
            f"RETRY.BUDGET_RATIO {p.retry.budget_ratio:g}, "
            f"_MIN_RETRIES_PER_SECOND {p.retry.budget_min_retries_per_second:g}, "
            f"_WINDOW {p.retry.budget_window:g} s",
            f"retryBudget: percent {percent:g}, minRetryConcurrency {floor}",
            "retries in flight against requests in flight now, not retries against calls over "
            "the window; the floor of retries a second becomes retries in flight: "
            "MIN_RETRIES_PER_SECOND x CONNECT + READ",
        )
    )


def _bulkhead(p: PolicyConfig, workers: int, t: Translation) -> None:
    slots = p.bulkhead.max_concurrent_calls * workers
    # Istio reads 0 pending requests as "unlimited": 1 is as close to "refuse at once" as it goes.
    pending = slots if p.bulkhead.max_wait else 1
    t.traffic_policy["connectionPool"] = {
        "tcp": {"maxConnections": slots},
        "http": {"http1MaxPendingRequests": pending, "http2MaxRequests": slots},
    }
    waiting = (
        "the mesh bounds how many wait for a slot, not how long (only the timeout does)"
        if p.bulkhead.max_wait
        else "one caller waits for a slot where the app refuses at once"
    )
    t.approximate.append(
        Line(
            f"BULKHEAD.MAX_CONCURRENT_CALLS {p.bulkhead.max_concurrent_calls}, "
            f"MAX_WAIT {p.bulkhead.max_wait:g} s",
            f"connectionPool: tcp.maxConnections {slots}, http.http2MaxRequests {slots}, "
            f"http.http1MaxPendingRequests {pending}",
            f"per calling pod ({workers} processes x {p.bulkhead.max_concurrent_calls}), "
            f"not per process; {waiting}",
        )
    )


def _breaker(p: PolicyConfig, t: Translation) -> None:
    b = p.circuit_breaker
    # The shortest run of failures that opens the app's breaker whatever came before: enough
    # calls for a verdict, and enough failures to reach the rate over a full window.
    run = max(
        b.minimum_number_of_calls, math.ceil(b.sliding_window_size * b.failure_rate_threshold / 100)
    )
    t.traffic_policy["outlierDetection"] = {
        "consecutive5xxErrors": run,
        # Ejections are checked at every sweep: one a second ends them close to their time.
        "interval": "1s",
        "baseEjectionTime": duration(b.wait_duration_in_open_state),
        # Every pod of the callee may go, and then the caller fails fast, like an open breaker,
        # instead of Envoy's panic mode sending to ejected pods anyway.
        "maxEjectionPercent": 100,
        "minHealthPercent": 0,
    }
    t.approximate.append(
        Line(
            f"CIRCUIT_BREAKER.FAILURE_RATE_THRESHOLD {b.failure_rate_threshold:g}% of "
            f"{b.sliding_window_size} calls, at least {b.minimum_number_of_calls}",
            f"outlierDetection.consecutive5xxErrors: {run}",
            f"{run} failures in a row (the shortest run that always opens the breaker): failures "
            "at that rate with successes between them never eject; each caller pod judges each "
            "callee pod alone (no shared state); 429s do not count, 503s naming a dependency do",
        )
    )
    t.approximate.append(
        Line(
            f"CIRCUIT_BREAKER.WAIT_DURATION_IN_OPEN_STATE {b.wait_duration_in_open_state:g} s",
            f"outlierDetection.baseEjectionTime: {duration(b.wait_duration_in_open_state)}",
            "the n-th ejection in a row lasts n times as long; then the pod gets all its "
            "traffic back at once",
        )
    )


def _only_the_app_can(p: PolicyConfig, t: Translation) -> None:
    b = p.circuit_breaker
    t.missing += [
        Line(
            "fallback",
            "",
            "the caller gets the sidecar's 503 or 504; only the app can answer otherwise "
            "(the gateway's recommendations: the cache, then popular shows)",
        ),
        Line(
            f"CIRCUIT_BREAKER.SLOW_CALL_DURATION {b.slow_call_duration:g} s, "
            f"SLOW_CALL_RATE_THRESHOLD {b.slow_call_rate_threshold:g}%",
            "",
            "slow-call rate: the mesh counts errors only; a slow success counts for nothing",
        ),
        Line(
            f"CIRCUIT_BREAKER.PERMITTED_CALLS_IN_HALF_OPEN_STATE {b.permitted_calls_in_half_open_state}",
            "",
            "half-open trials: an ejected pod gets all its traffic back, not a few trial calls",
        ),
        Line(
            "deadline propagation",
            "",
            "the callee is never told when its caller stops waiting (X-Deadline-Remaining-Ms), "
            "so it works on after the timeout",
        ),
    ]
    if p.retry.max_attempts > 1:
        t.missing.append(
            Line(
                "idempotency-aware retries",
                "",
                "the mesh retries a POST like a GET; the app retries a POST only with an "
                "Idempotency-Key. Every POST here carries one, so the callee makes the retry safe, "
                "not the mesh",
            )
        )


@dataclass(frozen=True)
class Export:
    """What ``mesh export`` writes: the rules, and the table that goes beside them."""

    rules: str
    table: str


def export(mesh: str, *, workers: int = DEFAULT_WORKERS, app_policies: bool = True) -> Export:
    """The rules for ``mesh``; with ``app_policies=False``, also the settings that turn the
    application's own policies off (mesh level only)."""
    if mesh not in MESHES:
        raise UnknownMesh(f"unknown mesh {mesh!r}: one of {', '.join(MESHES)}")
    pairs = [(edge, translate(edge.policy, workers=workers)) for edge in edges()]
    documents = istio_resources(pairs)
    header = (
        "# Generated by `manage.py mesh export istio` from RESILIENCE_POLICIES: do not edit,\n"
        "# export again (tests/workshop/test_mesh.py fails when the policies and this differ).\n"
        "# Needs Istio 1.27 or later. Callers are matched by their pods' "
        f"{CALLER_LABEL} label;\n# other clients (the control room, Prometheus) get Istio's defaults.\n"
    )
    if not app_policies:
        documents.append(app_policies_off())
        header += (
            f"# The last document, ConfigMap {APP_POLICIES_CONFIGMAP}, turns the application's own\n"
            "# policies off: RESILIENCE_ENABLED=0 makes every call a plain call with a 30 s timeout\n"
            "# and removes the app-level fallbacks too. Restart the Deployments to apply it.\n"
        )
    rules = header + yaml.safe_dump_all(documents, sort_keys=False, width=100)
    return Export(rules=rules, table=table(pairs, workers=workers, app_policies=app_policies))


def istio_resources(pairs: list[tuple[Edge, Translation]]) -> list[dict]:
    """A VirtualService per callee (a route per caller, then one for everybody else), and a
    DestinationRule per caller and callee."""
    documents = []
    for callee in sorted({edge.callee for edge, _ in pairs}):
        mine = [(edge, t) for edge, t in pairs if edge.callee == callee]
        routes = [
            {
                "name": f"from-{edge.caller}",
                "match": [{"sourceLabels": {CALLER_LABEL: edge.caller}}],
                "route": [{"destination": {"host": callee}}],
                **t.route,
            }
            for edge, t in mine
        ]
        routes.append({"name": "others", "route": [{"destination": {"host": callee}}]})
        documents.append(_istio("VirtualService", callee, {"hosts": [callee], "http": routes}))
        documents += [
            _istio(
                "DestinationRule",
                f"{edge.caller}-to-{callee}",
                {
                    "host": callee,
                    "workloadSelector": {"matchLabels": {CALLER_LABEL: edge.caller}},
                    "trafficPolicy": t.traffic_policy,
                },
            )
            for edge, t in mine
        ]
    return documents


def _istio(kind: str, name: str, spec: dict) -> dict:
    return {"apiVersion": ISTIO_API, "kind": kind, "metadata": {"name": name}, "spec": spec}


def app_policies_off() -> dict:
    """The ConfigMap that leaves the policies to the mesh (deploy/k8s reads it if it exists)."""
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": APP_POLICIES_CONFIGMAP},
        "data": {"RESILIENCE_ENABLED": "0"},
    }


def table(pairs: list[tuple[Edge, Translation]], *, workers: int, app_policies: bool) -> str:
    """Policy by policy (callers that share a policy share its rows), then what both layers
    together multiply."""
    groups: dict[PolicyConfig, list[tuple[Edge, Translation]]] = {}
    for edge, t in pairs:
        groups.setdefault(edge.policy, []).append((edge, t))
    lines = [f"Istio translation of RESILIENCE_POLICIES ({workers} gunicorn processes per pod)"]
    for policy, members in groups.items():
        callers = ", ".join(f"{edge.caller} -> {edge.callee}" for edge, _ in members)
        t = members[0][1]
        lines += ["", f"policy {policy.name!r}: {callers}"]
        lines += _section("exact", t.exact)
        lines += _section("approximate", t.approximate)
        lines += _section("no mesh equivalent", t.missing)
    lines += ["", *layers(pairs, app_policies=app_policies)]
    return "\n".join(lines) + "\n"


def _section(title: str, rows: Iterable[Line]) -> list[str]:
    lines = [f"  {title}"]
    for row in rows:
        head = f"{row.setting} -> {row.rule}" if row.rule else row.setting
        lines += _wrap(head, first=4, rest=8)
        lines += _wrap(row.note, first=8, rest=8)
    return lines


def _wrap(text: str, *, first: int = 0, rest: int = 0) -> list[str]:
    return textwrap.wrap(
        text,
        WIDTH,
        initial_indent=" " * first,
        subsequent_indent=" " * rest,
        break_on_hyphens=False,  # retryOn's policy names and header names stay whole
        break_long_words=False,
    )


def layers(pairs: list[tuple[Edge, Translation]], *, app_policies: bool) -> list[str]:
    """What each layer sends the last service of every path, and both together: attempts
    multiply at every hop, app attempts x mesh attempts."""
    attempts = {(e.caller, e.callee): e.policy.retry.max_attempts for e, _ in pairs}
    lines = ["Attempts the last service can receive for one call at the gateway:"]

    def walk(path: list[str], factor: int) -> None:
        for (caller, callee), n in sorted(attempts.items()):
            if caller == path[-1] and callee not in path:
                lines.append(
                    f"  {' -> '.join([*path, callee]):<42} app x{factor * n}, mesh x{factor * n}, "
                    f"both x{(factor * n) ** 2}"
                )
                walk([*path, callee], factor * n)

    walk([ENTRY], 1)
    if app_policies:
        advice = (
            "App policies stay on: with these rules both layers run, so retries multiply as "
            "above, and timeouts nest (each attempt of the app wraps the mesh's whole route: "
            "whichever limit is shorter ends the call). `--app-policies off` also writes the "
            "setting that leaves the policies to the mesh."
        )
    else:
        advice = (
            f"App policies off (ConfigMap {APP_POLICIES_CONFIGMAP}: RESILIENCE_ENABLED=0): every "
            f"call is a plain call with a {BASELINE_TIMEOUT:g} s timeout, and the app-level "
            "fallbacks are gone too."
        )
    return [*lines, *_wrap(advice)]


def schema_problems(documents: list[dict], schemas: Path = ISTIO_SCHEMAS) -> list[str]:
    """Every way ``documents`` break Istio's CRD schemas, read strictly: an unknown field is an
    error (the API server would drop it without a word), and durations are checked as Istio's
    CEL rule does. Other CEL rules are not checked."""
    try:
        import jsonschema  # a development dependency: exporting rules does not need it
    except ImportError:
        raise ImportError(
            "jsonschema is not installed, and it checks the rules against Istio's schemas: "
            ".venv/bin/pip install jsonschema"
        ) from None
    validators = _validators(schemas, jsonschema)
    problems = []
    for document in documents:
        name = f"{document.get('kind')} {document.get('metadata', {}).get('name')}"
        validator = validators.get((document.get("apiVersion"), document.get("kind")))
        if validator is None:
            problems.append(f"{name}: no Istio schema for {document.get('apiVersion')}")
            continue
        problems += [
            f"{name}: {'.'.join(map(str, error.absolute_path)) or '(top)'}: {error.message}"
            for error in validator.iter_errors(document)
        ]
    return problems


def _validators(schemas: Path, jsonschema) -> dict:
    def cel(validator, rules, instance, schema):
        if any(rule["rule"] == DURATION_RULE for rule in rules) and not _is_duration(instance):
            yield jsonschema.ValidationError(f"{instance!r} is not a duration of 1ms or more")

    # CRD schemas are OpenAPI 3.0, which is closest to JSON Schema draft 4.
    Validator = jsonschema.validators.extend(
        jsonschema.Draft4Validator, {"x-kubernetes-validations": cel}
    )
    found = {}
    for crd in yaml.safe_load_all(schemas.read_text()):
        group, kind = crd["spec"]["group"], crd["spec"]["names"]["kind"]
        for version in crd["spec"]["versions"]:
            schema = _strict(version["schema"]["openAPIV3Schema"])
            schema["properties"] |= {
                "apiVersion": {"type": "string"},
                "kind": {"type": "string"},
                "metadata": {"type": "object", "required": ["name"]},
            }
            found[(f"{group}/{version['name']}", kind)] = Validator(schema)
    return found


def _strict(schema):
    """The schema with every object closed to fields it does not name."""
    if isinstance(schema, list):
        return [_strict(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    closed = {key: _strict(value) for key, value in schema.items()}
    if (
        "properties" in schema
        and "additionalProperties" not in schema
        and not schema.get("x-kubernetes-preserve-unknown-fields")
    ):
        closed["additionalProperties"] = False
    return closed


_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def _is_duration(value) -> bool:
    """A Go duration ("1.5s", "1m30s") of at least 1 ms."""
    parts = (
        re.findall(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)", value) if isinstance(value, str) else []
    )
    if not parts or "".join(n + u for n, u in parts) != value:
        return False
    return sum(float(n) * _UNITS[u] for n, u in parts) >= 1e-3
