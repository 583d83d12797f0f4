"""What the control room's controls do: faults through each service's chaos API, processes
through supervisor, resilience off or on for the whole stack, and scenarios run live."""

import subprocess
import sys
import threading
import time
import xmlrpc.client
from pathlib import Path

import requests
from django.conf import settings

from workshop.console import graph

ROOT = Path(__file__).resolve().parents[2]


class ControlError(Exception):
    """A control could not be carried out; the message says why."""


# -- faults -------------------------------------------------------------------------------------------


def _chaos(service: str, method: str, fault: dict | None = None) -> requests.Response:
    url = f"{settings.SERVICE_URLS[service]}/chaos/"
    headers = {"Authorization": f"Bearer {settings.CHAOS_TOKEN}"}
    return requests.request(method, url, json=fault, headers=headers, timeout=5)


def set_fault(service: str, fault: dict) -> tuple[int, dict]:
    """The service's own answer to the fault (its status and body: a 400 names a bad field)."""
    try:
        answer = _chaos(service, "PUT", fault)
    except requests.RequestException as exc:
        raise ControlError(f"{service} did not answer its chaos API: {exc}") from exc
    return answer.status_code, answer.json()


def lift_fault(service: str) -> str:
    """Lift the fault through the chaos API; if the service is too busy to answer it (its
    threads all held by the fault), clear it on the machine as an operator would."""
    try:
        _chaos(service, "DELETE").raise_for_status()
        return "through its chaos API"
    except requests.RequestException:
        done = subprocess.run(
            [sys.executable, "manage.py", "chaos", "clear"],
            cwd=ROOT,
            env={
                **_env(),
                "DJANGO_SETTINGS_MODULE": f"booking.settings.{service}",
            },
            capture_output=True,
            text=True,
            timeout=60,
        )
        if done.returncode:
            raise ControlError(f"{service}: chaos clear failed: {done.stderr[-300:]}") from None
        return "with manage.py chaos clear (its chaos API did not answer)"


def _env() -> dict[str, str]:
    import os

    return {**os.environ, "BOOKING_VAR_DIR": str(settings.VAR_DIR)}


def landed(service: str, fault: dict) -> dict:
    """Whether the fault took effect: probes sent straight to the service, on the path and
    method it matches (with no body: a probe is refused by the view, it never books or
    charges). The OpenTelemetry demo's flags that silently did nothing, answered."""
    match = fault.get("match") or {}
    url = settings.SERVICE_URLS[service] + (match.get("path_prefix") or "/health/")
    method = match.get("method") or "GET"
    headers = {match["header"]["name"]: match["header"]["value"]} if match.get("header") else {}
    kinds = {k for k in ("hang", "latency_ms", "error_rate", "delay_response_ms") if fault.get(k)}
    if not kinds:
        return {
            "landed": None,
            "evidence": "fail_next is not probed: a probe would use up the failures it counts. "
            "Watch the callers' tiles instead.",
        }
    session = requests.Session()
    session.trust_env = False

    def probe(timeout: float) -> tuple[float, int | None]:
        began = time.monotonic()
        try:
            answer = session.request(method, url, headers=headers, timeout=timeout)
            return time.monotonic() - began, answer.status_code
        except requests.Timeout:
            return time.monotonic() - began, None
        except requests.RequestException:
            return time.monotonic() - began, -1

    if "hang" in kinds:
        took, status = probe(1.5)
        ok = status is None
        return {
            "landed": ok,
            "evidence": f"a probe {'got no answer within 1.5 s' if ok else f'was answered {status} after {took:.2f} s'}",
        }
    if kinds & {"latency_ms", "delay_response_ms"}:
        expected = (fault.get("latency_ms") or 0) + (fault.get("delay_response_ms") or 0)
        took, status = probe(expected / 1000 + 2.0)
        ok = took >= 0.8 * expected / 1000
        return {
            "landed": ok,
            "evidence": f"a probe took {took * 1000:.0f} ms (the fault adds {expected} ms)",
        }
    wanted = fault.get("error_status") or 503
    answers = [probe(2.0)[1] for _ in range(10)]
    errors = sum(1 for status in answers if status == wanted)
    evidence = (
        f"{errors} of 10 probes answered {wanted} (error rate set: {fault['error_rate']:.0%})"
    )
    if errors == 0 and fault["error_rate"] * 10 < 3:
        # At a low rate, 10 probes without an error prove nothing either way.
        return {"landed": None, "evidence": evidence + ": too few probes to tell"}
    return {"landed": errors > 0, "evidence": evidence}


# -- processes ------------------------------------------------------------------------------------------


def supervisor():
    """The local stack's supervisord, over its unix socket; None where there is none."""
    socket_path = settings.CONSOLE_SUPERVISOR_SOCKET
    if not socket_path or not Path(socket_path).exists():
        return None
    from workshop.stack import supervisor_rpc

    return supervisor_rpc(socket_path)


def program_states() -> dict[str, str]:
    proxy = supervisor()
    if proxy is None:
        return {}
    return {
        info["name"]: info["statename"]
        for info in proxy.getAllProcessInfo()
        if info["name"] in graph.PROGRAMS
    }


def control_process(name: str, action: str) -> None:
    if name not in graph.PROGRAMS:
        raise ControlError(f"no program {name!r}: one of {', '.join(graph.PROGRAMS)}")
    proxy = supervisor()
    if proxy is None:
        raise ControlError("no supervisor here: processes are controlled by the platform")
    try:
        if action == "stop":
            proxy.stopProcess(name, True)
        else:
            proxy.startProcess(name, True)
    except xmlrpc.client.Fault as exc:
        raise ControlError(f"{action} {name}: {exc.faultString}") from exc


# -- background work, one at a time ----------------------------------------------------------------------


class Job:
    """A control that takes a while (restarting the stack, running a scenario): one at a time,
    in a thread, its progress written as events."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.running: str | None = None
        self.last: dict | None = None

    def start(self, what: str, work, event) -> None:
        with self.lock:
            if self.running is not None:
                raise ControlError(f"busy: {self.running} is still running")
            self.running = what

        def run():
            began = time.monotonic()
            try:
                result = work()
                self.last = {"what": what, "ok": True, "result": result}
                event("job", f"{what}: done in {time.monotonic() - began:.0f} s")
            except Exception as exc:
                self.last = {"what": what, "ok": False, "result": str(exc)}
                event("job", f"{what}: failed: {exc}")
            finally:
                with self.lock:
                    self.running = None

        threading.Thread(target=run, name="console-job", daemon=True).start()


def set_resilience(enabled: bool, event) -> str:
    """Restart every service of the local stack with resilience on or off (not the console)."""
    from workshop.stack import Stack

    stack = Stack(out=lambda line: event("job", line))
    restarted = stack.set_resilience(enabled)
    stack.wait_healthy(timeout=120)
    return f"resilience {'on' if enabled else 'off'}: restarted {', '.join(restarted) or 'nothing'}"


def run_scenario(name: str, event) -> str:
    """Run a scenario's load and faults on this stack (not a fresh one), so that the control
    room shows it live; its table goes to var/scenarios/NAME-live.txt."""
    from workshop.scenarios import report, runner
    from workshop.scenarios.catalog import SCENARIOS
    from workshop.scenarios.stack import RunningStack
    from workshop.stack import Stack

    scenario = SCENARIOS[name]
    resilience = Stack().resilience_enabled()
    stack = RunningStack.attach(
        Path(settings.VAR_DIR), settings.SERVICE_URLS, settings.CHAOS_TOKEN, resilience=resilience
    )
    result = runner.run(
        scenario, resilience=resilience, stack=stack, out=lambda line: event("scenario", line)
    )
    out = Path(settings.VAR_DIR) / "scenarios"
    out.mkdir(parents=True, exist_ok=True)
    table = report.table(scenario, [result])
    (out / f"{name}-live.txt").write_text(table + "\n")
    report.write_chart(out / f"{name}-live.png", scenario, [result])
    failed = len(result.failed_checks)
    return f"{name}: {len(result.checks) - failed} of {len(result.checks)} checks passed"
