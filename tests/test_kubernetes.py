"""deploy/k8s against the code: every service, port, variable, database and probe matches.

No cluster runs here, so the manifests are checked, not run: each overlay is rendered with
`kubectl kustomize`, every core object is validated offline with kubernetes-validate's bundled
schemas and every Istio object with Istio's own CRD schemas, then the rendered objects are held
against the settings, as tests/test_compose.py does for docker-compose.yml. A missing tool fails
the test with what to install: a check that did not run must not look like one that passed.
"""

import importlib.util
import re
import shlex
import shutil
import subprocess
from pathlib import Path
from urllib.parse import urlparse

import pytest
import yaml
from django.urls import resolve

from booking import health
from booking.settings import base
from tests.test_compose import COMPOSE, EXTERNAL_VARIABLES, variables_read_by_the_code
from workshop import mesh
from workshop.console import views as console_views

ROOT = Path(__file__).resolve().parents[1]
K8S = ROOT / "deploy/k8s"
OVERLAYS = ("base", "overlays/local", "overlays/istio")
# The oldest Kubernetes kubernetes-validate knows, and its newest.
KUBERNETES_VERSIONS = ("1.25", "latest")
IMAGE = "concert-booking:local"
SERVICES = tuple(base.SERVICE_URLS)
CONSOLE = "console"  # the control room: a service without a database of its own
DATABASE_OWNERS = tuple(s for s in SERVICES if s != CONSOLE)
SECRET = "booking-secrets"
SECRET_KEYS = {"DJANGO_SECRET_KEY", "CHAOS_TOKEN", "POSTGRES_PASSWORD"}
# kubectl 1.20 (Debian's kubernetes-client) embeds kustomize v2: nothing newer may be used.
KUSTOMIZE_V2_FIELDS = {
    "apiVersion",
    "kind",
    "resources",
    "bases",
    "namespace",
    "commonLabels",
    "patchesStrategicMerge",
    "configMapGenerator",
    "images",
}
# What the code reads and the manifests leave unset, on purpose. A variable the code starts to
# read must be set in deploy/k8s or named here, or test_every_variable_the_code_reads_... fails.
LEFT_UNSET = {
    "the services' own defaults, as in compose": {
        "BOOKING_NAMESPACE",
        "DB_POOL_MAX_SIZE",
        "DB_POOL_TIMEOUT",
        "DJANGO_DEBUG",
        "GUNICORN_ACCESSLOG",
        "GUNICORN_PROC_NAME",
        "GUNICORN_TIMEOUT",
        "LOG_LEVEL",
        "NOTIFICATIONS_SEND_LEASE",
        "ORDERS_PAYMENT_PENDING_MAX_AGE",
        "ORDERS_PENDING_MAX_AGE",
        "ORDERS_RECONCILE_INTERVAL",
        "ORDERS_SAFETY_NET_DELAY",
        "ORDERS_SETTLE_BACKOFF_INITIAL",
        "ORDERS_SETTLE_BACKOFF_MAX",
        "ORDERS_SETTLE_MAX_PASSES",
        "ORDERS_WORKER_ALIVE_FILE",
        "ORDERS_WORKER_DEAD_AFTER",
        "ORDERS_WORKER_HEARTBEAT",
        "PAYMENTS_IN_FLIGHT_LEASE",
        "PAYMENTS_LATENCY_MAX_MS",
        "PAYMENTS_LATENCY_MIN_MS",
        "SEAT_HOLD_TTL",
    },
    "e-mail goes to files inside the notifications pod (Django's file backend)": {
        "DEFAULT_FROM_EMAIL",
        "EMAIL_BACKEND",
        "EMAIL_HOST",
        "EMAIL_PORT",
        "NOTIFICATIONS_MAIL_DOMAIN",
    },
    "the image sets it (Dockerfile)": {"BOOKING_VAR_DIR"},
    "Kubernetes runs the processes, not supervisord": {"CONSOLE_SUPERVISOR_SOCKET"},
    "the local stack's number of task workers: Kubernetes scales the Deployment": {
        "ORDERS_TASK_WORKERS"
    },
    "the local stack's workshop tooling (`manage.py stack policy`, `lab prometheus`)": {
        "RESILIENCE_POLICY_OVERRIDES",
        "LAB_PROMETHEUS_URL",
    },
    "it follows CHAOS_ENABLED": {"CONSOLE_WRITES_ENABLED"},
    f"`mesh export istio --app-policies off` sets it (ConfigMap {mesh.APP_POLICIES_CONFIGMAP})": {
        "RESILIENCE_ENABLED"
    },
}
# Read by Kubernetes itself: it builds DATABASE_URL from it.
KUBERNETES_VARIABLES = {"POSTGRES_PASSWORD"}
# Containers of docker-compose.yml that the cluster does without.
COMPOSE_ONLY = {
    "mailpit": "e-mail goes to files inside the notifications pod",
    "grafana": "the control room and Prometheus's own pages show the metrics",
}


def kubectl() -> str:
    path = shutil.which("kubectl")
    if path is None:
        pytest.fail(
            "kubectl is not installed: it renders the overlays with `kubectl kustomize`. "
            "Install it (Debian: apt-get install kubernetes-client)."
        )
    return path


def kubernetes_validate():
    try:
        import kubernetes_validate
    except ImportError:
        pytest.fail(
            "kubernetes-validate is not installed: it validates the manifests offline. "
            "Install it: .venv/bin/pip install kubernetes-validate"
        )
    return kubernetes_validate


def render(overlay: str) -> list[dict]:
    done = subprocess.run(
        [kubectl(), "kustomize", str(K8S / overlay)], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, f"kubectl kustomize {overlay} failed:\n{done.stderr}"
    return [document for document in yaml.safe_load_all(done.stdout) if document]


@pytest.fixture(scope="module")
def rendered() -> dict[str, list[dict]]:
    return {overlay: render(overlay) for overlay in OVERLAYS}


def of_kind(documents: list[dict], kind: str) -> dict[str, dict]:
    return {d["metadata"]["name"]: d for d in documents if d["kind"] == kind}


def pod(deployment: dict) -> dict:
    return deployment["spec"]["template"]


def containers(documents: list[dict]) -> list[tuple[str, dict]]:
    """(Deployment name, container) for every container of every Deployment."""
    return [
        (name, container)
        for name, deployment in of_kind(documents, "Deployment").items()
        for container in pod(deployment)["spec"]["containers"]
    ]


def app_containers(documents: list[dict]) -> list[tuple[str, dict]]:
    return [(name, c) for name, c in containers(documents) if c["image"] == IMAGE]


def environment(documents: list[dict], container: dict) -> dict[str, str]:
    """What the container's process sees: its ConfigMaps, then its own entries (a Secret's key
    stands in for its value)."""
    config_maps = of_kind(documents, "ConfigMap")
    values: dict[str, str] = {}
    for source in container.get("envFrom", []):
        ref = source["configMapRef"]
        if ref["name"] in config_maps:
            values |= config_maps[ref["name"]]["data"]
        else:
            assert ref.get("optional"), f"{ref['name']} is neither rendered nor optional"
    for entry in container.get("env", []):
        secret = entry.get("valueFrom", {}).get("secretKeyRef")
        values[entry["name"]] = f"<secret {secret['key']}>" if secret else entry["value"]
    return values


def settings_of(documents: list[dict], container: dict) -> str:
    return environment(documents, container)["DJANGO_SETTINGS_MODULE"].rpartition(".")[2]


def port_of(service: str) -> int:
    return urlparse(base.SERVICE_URLS[service]).port


def compose_command(container: str) -> list[str]:
    command = COMPOSE["services"][container]["command"]
    return shlex.split(command) if isinstance(command, str) else command


def test_the_tools_are_installed():
    """Without them every check below errors: this says, once, what to install."""
    kubectl()
    kubernetes_validate()
    try:
        mesh.schema_problems([])
    except ImportError as missing:
        pytest.fail(str(missing))


def test_the_kustomizations_use_only_what_kubectl_1_20_understands():
    """kustomize v2: directories only under bases, files only under resources."""
    for path in K8S.rglob("kustomization.yaml"):
        kustomization = yaml.safe_load(path.read_text())
        assert set(kustomization) - KUSTOMIZE_V2_FIELDS == set(), path
        assert kustomization["apiVersion"] == "kustomize.config.k8s.io/v1beta1", path
        for entry in kustomization.get("resources", []):
            assert (path.parent / entry).is_file(), f"{path}: {entry} is not a file"
        for entry in kustomization.get("bases", []):
            assert (path.parent / entry / "kustomization.yaml").is_file(), f"{path}: {entry}"
        for generator in kustomization.get("configMapGenerator", []):
            # v2 reads `env`, not `envs`, and knows no per-generator `options`.
            assert set(generator) <= {"name", "behavior", "literals", "files"}, path


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_core_object_is_valid_kubernetes(rendered, overlay):
    """Strict schemas: a misspelt field is an error, as `kubectl apply` would say."""
    validate = kubernetes_validate()
    versions = [
        validate.utils.latest_version() if v == "latest" else v for v in KUBERNETES_VERSIONS
    ]
    problems = []
    for document in rendered[overlay]:
        if document["apiVersion"].startswith(mesh.ISTIO_API.partition("/")[0]):
            continue
        for version in versions:
            try:
                validate.validate(document, version, strict=True)
            except validate.ValidationError as error:
                where = ".".join(map(str, error.path))
                problems.append(
                    f"{document['kind']} {document['metadata']['name']} {where}: {error.message} (Kubernetes {version})"
                )
    assert problems == []


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_istio_object_matches_istios_schemas(rendered, overlay):
    istio = [d for d in rendered[overlay] if d["apiVersion"].startswith("networking.istio.io/")]
    assert bool(istio) == (overlay == "overlays/istio")
    try:
        problems = mesh.schema_problems(istio)
    except ImportError as missing:
        pytest.fail(str(missing))
    assert problems == []


@pytest.mark.parametrize("overlay", OVERLAYS)
@pytest.mark.parametrize("service", SERVICES)
def test_each_service_runs_its_own_settings_on_its_own_port(rendered, overlay, service):
    documents = rendered[overlay]
    deployment, front = (
        of_kind(documents, "Deployment")[service],
        of_kind(documents, "Service")[service],
    )
    [container] = pod(deployment)["spec"]["containers"]
    variables = environment(documents, container)
    assert variables["DJANGO_SETTINGS_MODULE"] == f"booking.settings.{service}"
    assert importlib.util.find_spec(variables["DJANGO_SETTINGS_MODULE"]), "no such settings module"
    assert variables["GUNICORN_BIND"] == f"0.0.0.0:{port_of(service)}"
    if service in DATABASE_OWNERS:  # several gunicorn processes, whose metrics /metrics sums
        assert variables["PROMETHEUS_MULTIPROC_DIR"] == "/tmp/prometheus"
    assert container["ports"] == [{"name": "http", "containerPort": port_of(service)}]
    # Named http, so that Istio routes it as HTTP.
    assert front["spec"]["ports"] == [
        {"name": "http", "port": port_of(service), "targetPort": "http"}
    ]
    # The Service reaches this Deployment's pods and no other's (not the worker's, say).
    selected = [
        name
        for name, d in of_kind(documents, "Deployment").items()
        if front["spec"]["selector"].items() <= pod(d)["metadata"]["labels"].items()
    ]
    assert selected == [service]


@pytest.mark.parametrize("service", SERVICES)
def test_each_service_has_its_own_database(rendered, service):
    documents = rendered["base"]
    for name, container in app_containers(documents):
        if settings_of(documents, container) != service:
            continue
        url = environment(documents, container).get("DATABASE_URL")
        if service == CONSOLE:
            assert url is None, name
        else:
            assert url == f"postgres://booking:$(POSTGRES_PASSWORD)@postgres:5432/{service}", name
            names = [e["name"] for e in container["env"]]
            assert names.index("POSTGRES_PASSWORD") < names.index("DATABASE_URL"), name


def test_postgres_creates_exactly_the_service_databases():
    copy = K8S / "base/config/create-databases.sql"
    assert copy.read_text() == (ROOT / "deploy/postgres/create-databases.sql").read_text()
    assert sorted(re.findall(r"CREATE DATABASE (\w+);", copy.read_text())) == sorted(
        DATABASE_OWNERS
    )


# What each probe's path must reach in the container's own URLconf. Startup and liveness
# restart the container when they fail, so they must answer without the database (a
# PostgreSQL outage would restart every pod); readiness takes it out of its Service instead.
PROBE_VIEWS = {
    "startupProbe": {health.livez},
    "readinessProbe": {health.health, console_views.health},  # the console has no database
    "livenessProbe": {health.livez},
}


def probed_view(documents: list[dict], container: dict, path: str):
    """The view that ``path`` reaches in the URLconf of the container's own settings."""
    module = environment(documents, container)["DJANGO_SETTINGS_MODULE"]
    urlconf = re.search(
        r'^ROOT_URLCONF = "([\w.]+)"$',
        (ROOT / (module.replace(".", "/") + ".py")).read_text(),
        re.M,
    )[1]
    return resolve(path, urlconf=urlconf).func


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_server_is_probed_and_only_readiness_needs_the_database(rendered, overlay):
    documents = rendered[overlay]
    for name, container in app_containers(documents):
        if not any(port["name"] == "http" for port in container.get("ports", [])):
            continue  # the worker (its metrics port only) and the sweeper serve no HTTP API
        allowed = environment(documents, container)["DJANGO_ALLOWED_HOSTS"].split(",")
        for probe, views in PROBE_VIEWS.items():
            get = container[probe]["httpGet"]
            assert get["port"] == "http", (name, probe)
            assert probed_view(documents, container, get["path"]) in views, (name, probe)
            assert get["httpHeaders"] == [{"name": "Host", "value": "localhost"}], (name, probe)
            assert "localhost" in allowed, name


def test_a_liveness_probe_on_health_would_fail_the_check(rendered):
    """The check above tells the two paths apart: /health/ asks the database, /livez/ not."""
    documents = rendered["base"]
    [orders] = pod(of_kind(documents, "Deployment")["orders"])["spec"]["containers"]
    assert probed_view(documents, orders, "/health/") not in PROBE_VIEWS["livenessProbe"]
    assert probed_view(documents, orders, "/livez/") in PROBE_VIEWS["livenessProbe"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_container_finds_every_service_where_it_listens(rendered, overlay):
    documents = rendered[overlay]
    fronts = of_kind(documents, "Service")
    for name, container in app_containers(documents):
        variables = environment(documents, container)
        hosts = variables["DJANGO_ALLOWED_HOSTS"].split(",")
        for service in SERVICES:
            assert variables[f"{service.upper()}_URL"] == f"http://{service}:{port_of(service)}", (
                name
            )
            assert fronts[service]["spec"]["ports"][0]["port"] == port_of(service)
            assert service in hosts, f"{name}: a call to {service} would be refused (Host)"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_no_variable_is_set_that_nothing_reads(rendered, overlay):
    """A misspelt variable would silently do nothing: every one set must be read somewhere."""
    known = variables_read_by_the_code() | EXTERNAL_VARIABLES | KUBERNETES_VARIABLES
    for name, container in app_containers(rendered[overlay]):
        assert set(environment(rendered[overlay], container)) - known == set(), name


def test_every_variable_the_code_reads_is_set_or_left_unset_on_purpose(rendered):
    documents = rendered["overlays/local"]
    set_somewhere = set().union(
        *(environment(documents, container) for _, container in app_containers(documents))
    )
    on_purpose = set().union(*LEFT_UNSET.values())
    missing = variables_read_by_the_code() - set_somewhere - on_purpose
    assert missing == set(), "set them in deploy/k8s, or name them in LEFT_UNSET with the reason"
    assert on_purpose & set_somewhere == set(), "set in deploy/k8s: take them out of LEFT_UNSET"


def test_every_process_of_compose_runs_here_the_same_way(rendered):
    documents = rendered["base"]
    deployments = of_kind(documents, "Deployment")
    for name, spec in COMPOSE["services"].items():
        if name in COMPOSE_ONLY:
            continue
        assert name in deployments, f"{name} runs in docker-compose.yml, not in deploy/k8s"
        [mine] = pod(deployments[name])["spec"]["containers"]
        if spec.get("image") == IMAGE:
            assert mine["image"] == IMAGE, name
            assert mine["command"] == compose_command(name), name
            theirs = {k: str(v) for k, v in spec["environment"].items()}
            assert (
                environment(documents, mine)["DJANGO_SETTINGS_MODULE"]
                == theirs["DJANGO_SETTINGS_MODULE"]
            ), name
        else:
            assert mine["image"] == spec["image"], name


def test_the_worker_uses_the_orders_database_and_the_sweeper_inventorys(rendered):
    documents = rendered["base"]
    deployments = of_kind(documents, "Deployment")
    for process, service in (("orders-worker", "orders"), ("inventory-sweeper", "inventory")):
        [mine] = pod(deployments[process])["spec"]["containers"]
        [theirs] = pod(deployments[service])["spec"]["containers"]
        assert (
            environment(documents, mine)["DATABASE_URL"]
            == environment(documents, theirs)["DATABASE_URL"]
        )
        # Metric files in its own pod would be read by no /metrics (the local stack's worker
        # shares orders' directory: docs/monitoring.md).
        assert "PROMETHEUS_MULTIPROC_DIR" not in environment(documents, mine), process
        # Its pods call with the service's policies, so the mesh's rules must follow them.
        labels = pod(deployments[process])["metadata"]["labels"]
        assert labels[mesh.CALLER_LABEL] == service


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_worker_is_alive_by_its_heartbeat_file_not_the_database(rendered, overlay):
    [worker] = pod(of_kind(rendered[overlay], "Deployment")["orders-worker"])["spec"]["containers"]
    probe = worker["livenessProbe"]
    assert "httpGet" not in probe  # the worker answers no HTTP
    command = probe["exec"]["command"]
    assert command[:3] == ["python", "manage.py", "orders_worker_alive"]
    assert (ROOT / "orders/management/commands/orders_worker_alive.py").exists()
    max_age = float(command[command.index("--max-age") + 1])
    # Several beats may pass unseen, one of them waiting out the database pool (DB_POOL_TIMEOUT,
    # 5 s by default) before the next touch.
    assert max_age >= 3 * base.ORDERS_WORKER_HEARTBEAT + 5
    assert compose_healthcheck("orders-worker") == command


def compose_healthcheck(container: str) -> list[str]:
    test = COMPOSE["services"][container]["healthcheck"]["test"]
    return test[1:] if test[0] == "CMD" else shlex.split(test[1])


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_container_has_requests_and_limits(rendered, overlay):
    for name, container in containers(rendered[overlay]):
        for bound in ("requests", "limits"):
            assert set(container["resources"][bound]) == {"cpu", "memory"}, (name, bound)


def test_the_local_overlay_asks_for_less_than_the_base(rendered):
    def requested(documents):
        return {name: c["resources"]["requests"] for name, c in containers(documents)}

    def millicores(cpu: str) -> float:
        return float(cpu[:-1]) if cpu.endswith("m") else float(cpu) * 1000

    local, base_requests = requested(rendered["overlays/local"]), requested(rendered["base"])
    assert local.keys() == base_requests.keys()
    for name in local:
        assert millicores(local[name]["cpu"]) < millicores(base_requests[name]["cpu"]), name


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_secrets_are_referenced_never_committed(rendered, overlay):
    documents = rendered[overlay]
    assert of_kind(documents, "Secret") == {}
    for name, container in containers(documents):
        for entry in container.get("env", []):
            ref = entry.get("valueFrom", {}).get("secretKeyRef")
            if ref:
                assert ref["name"] == SECRET and ref["key"] in SECRET_KEYS, name


def test_the_docs_create_the_secret_with_every_key():
    text = (ROOT / "docs/kubernetes.md").read_text()
    [command] = re.findall(rf"kubectl [^\n]*create secret generic {SECRET}[^`]*", text)
    assert set(re.findall(r"--from-literal=(\w+)=", command)) == SECRET_KEYS
    # DJANGO_ENV=production refuses a DJANGO_SECRET_KEY shorter than 50 characters.
    assert "token_urlsafe(50)" in command


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_production_settings_never_meet_the_chaos_api(rendered, overlay):
    [config] = [
        d["data"]
        for d in rendered[overlay]
        if d["kind"] == "ConfigMap" and "DJANGO_ENV" in d["data"]
    ]
    chaos = config.get("CHAOS_ENABLED", "0").lower() not in ("0", "false", "no", "off", "")
    assert not (config["DJANGO_ENV"] == "production" and chaos)
    assert (config["DJANGO_ENV"], chaos) == (
        ("production", False) if overlay == "base" else ("development", True)
    )


def test_the_mesh_rules_were_exported_for_the_manifests_gunicorn_processes(rendered):
    documents = rendered["overlays/istio"]
    for name, container in app_containers(documents):
        if settings_of(documents, container) in DATABASE_OWNERS and any(
            p["name"] == "http" for p in container.get("ports", [])
        ):
            assert environment(documents, container)["GUNICORN_WORKERS"] == str(
                mesh.DEFAULT_WORKERS
            ), name


def test_every_caller_reads_the_app_policies_configmap_last(rendered):
    documents = rendered["base"]
    for name, container in app_containers(documents):
        if settings_of(documents, container) == CONSOLE:
            continue
        assert container["envFrom"][-1] == {
            "configMapRef": {"name": mesh.APP_POLICIES_CONFIGMAP, "optional": True}
        }, name


def test_the_istio_overlay_injects_sidecars_and_its_rules_find_their_pods(rendered):
    documents = rendered["overlays/istio"]
    [namespace] = of_kind(documents, "Namespace").values()
    assert namespace["metadata"]["labels"]["istio-injection"] == "enabled"
    pod_labels = [pod(d)["metadata"]["labels"] for d in of_kind(documents, "Deployment").values()]
    fronts = of_kind(documents, "Service")
    for rule in of_kind(documents, "DestinationRule").values():
        selector = rule["spec"]["workloadSelector"]["matchLabels"]
        assert any(selector.items() <= labels.items() for labels in pod_labels), rule
        assert fronts[rule["spec"]["host"]]["spec"]["ports"][0]["name"] == "http"
    for service in of_kind(documents, "VirtualService").values():
        for route in service["spec"]["http"]:
            for match in route.get("match", []):
                labels = match["sourceLabels"]
                assert any(labels.items() <= p.items() for p in pod_labels), route["name"]


@pytest.mark.parametrize("name", ["prometheus.yml", "alerts.yml"])
def test_prometheus_runs_composes_configuration_and_alert_rules(name):
    original = ROOT / "deploy/prometheus" / name
    if not original.exists():
        pytest.fail(
            f"{original.relative_to(ROOT)} does not exist yet: deploy/k8s needs a copy of it"
        )
    copy = K8S / "base/config" / name
    assert copy.read_text() == original.read_text(), (
        f"{copy.relative_to(ROOT)} differs from {original.relative_to(ROOT)}: "
        f"cp {original.relative_to(ROOT)} {copy.relative_to(ROOT)}"
    )
