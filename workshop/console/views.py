"""The control room's page and its JSON API (the page uses the same API a script would).

Reads are open (the console binds to 127.0.0.1 in the local stack). Every write needs the
chaos token: ``Authorization: Bearer <token>`` from a script, or the token entered once on the
page, kept in the session and then protected by CSRF. Writes are off unless the stack is one
to break on purpose (``CONSOLE_WRITES_ENABLED``, which follows ``CHAOS_ENABLED``).
"""

import functools
import hmac
import json
import os
import re
import threading
from pathlib import Path

from django.conf import settings
from django.http import FileResponse, Http404, JsonResponse
from django.middleware.csrf import CsrfViewMiddleware
from django.shortcuts import redirect, render
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from workshop.console import control, graph
from workshop.console.watch import Watcher, describe_fault

_watcher: Watcher | None = None
_job = control.Job()
SESSION_KEY = "chaos_token"


def watcher() -> Watcher:
    global _watcher
    if _watcher is None:
        urls = {service: settings.SERVICE_URLS[service] for service in graph.SERVICES}
        events = Path(settings.VAR_DIR) / "console" / "events.jsonl"
        events.parent.mkdir(parents=True, exist_ok=True)
        _watcher = Watcher(
            urls,
            settings.CHAOS_TOKEN,
            interval=settings.CONSOLE_POLL_INTERVAL,
            processes=control.program_states if control.supervisor() else None,
            events_file=events,
        )
    _watcher.start()
    return _watcher


def error(status: int, code: str, message: str) -> JsonResponse:
    return JsonResponse({"code": code, "message": message}, status=status)


def _token_matches(token: str) -> bool:
    return bool(settings.CHAOS_TOKEN) and hmac.compare_digest(
        token.encode(), settings.CHAOS_TOKEN.encode()
    )


def write_access(view):
    """401 without the token, 403 with a wrong one, 403 with writes off; CSRF when the token
    comes from the session (a browser), as DRF's SessionAuthentication does."""

    @functools.wraps(view)
    def wrapped(request, *args, **kwargs):
        if not settings.CONSOLE_WRITES_ENABLED:
            return error(403, "writes_disabled", "The control room's writes are off here.")
        header = request.headers.get("Authorization", "")
        if header.startswith("Bearer "):
            if not _token_matches(header[len("Bearer ") :]):
                return error(403, "wrong_token", "Wrong chaos token.")
        elif request.session.get(SESSION_KEY):
            refused = CsrfViewMiddleware(lambda r: None).process_view(request, None, (), {})
            if refused is not None:
                return error(403, "csrf_failed", "CSRF check failed: reload the page.")
            if not _token_matches(request.session[SESSION_KEY]):
                return error(403, "wrong_token", "The chaos token of this session is wrong.")
        else:
            response = error(
                401,
                "token_required",
                "Writes need the chaos token: enter it on the page, or send "
                "'Authorization: Bearer <token>' (make up prints it; var/stack/chaos-token).",
            )
            response["WWW-Authenticate"] = 'Bearer realm="control room"'
            return response
        return view(request, *args, **kwargs)

    return csrf_exempt(wrapped)


def _body(request) -> dict:
    try:
        body = json.loads(request.body or b"{}")
    except ValueError:
        body = None
    if not isinstance(body, dict):
        raise ValueError("the body must be a JSON object")
    return body


# -- reads ----------------------------------------------------------------------------------------------


def _page(request, status: int = 200, sign_in_error: str = ""):
    return render(
        request,
        "console/index.html",
        {
            "writes_enabled": settings.CONSOLE_WRITES_ENABLED,
            "signed_in": bool(request.session.get(SESSION_KEY)),
            "sign_in_error": sign_in_error,
            "services": graph.SERVICES,
            "programs": graph.PROGRAMS,
            "scenarios": _scenario_names(),
        },
        status=status,
    )


@require_GET
def page(request):
    return _page(request)


@require_GET
def state(request):
    picture = watcher().state()
    picture["job"] = {"running": _job.running, "last": _job.last}
    picture["resilience"] = _resilience_mode()
    picture["landed"] = watcher().landed
    return JsonResponse(picture)


@require_GET
def health(request):
    return JsonResponse({"service": "console", "status": "ok", "worker": os.getpid()})


def _resilience_mode() -> str:
    from workshop.stack import Stack

    return "on" if Stack().resilience_enabled() else "off"


def _scenario_names() -> list[str]:
    from workshop.scenarios.catalog import SCENARIOS

    return list(SCENARIOS)


RESULT = re.compile(r"^[a-z0-9-]+\.(png|txt|json)$")


@require_GET
def scenarios(request):
    out = Path(settings.VAR_DIR) / "scenarios"
    files = sorted(p.name for p in out.glob("*") if RESULT.match(p.name)) if out.exists() else []
    return JsonResponse({"scenarios": _scenario_names(), "results": files})


@require_GET
def scenario_result(request, filename: str):
    if not RESULT.match(filename):
        raise Http404("no such result")
    path = Path(settings.VAR_DIR) / "scenarios" / filename
    if not path.exists():
        raise Http404("no such result")
    return FileResponse(path.open("rb"))


# -- writes ---------------------------------------------------------------------------------------------


@require_POST
def sign_in(request):
    token = request.POST.get("token", "")
    if settings.CONSOLE_WRITES_ENABLED and _token_matches(token):
        request.session.cycle_key()
        request.session[SESSION_KEY] = token
        return redirect("console:page")
    return _page(request, status=403, sign_in_error="That is not the chaos token of this stack.")


@require_POST
def sign_out(request):
    request.session.flush()
    return redirect("console:page")


@write_access
@require_http_methods(["PUT", "DELETE"])
def fault(request, service: str):
    if service not in graph.SERVICES:
        return error(404, "no_such_service", f"No service {service!r}.")
    events = watcher()
    if request.method == "DELETE":
        try:
            how = control.lift_fault(service)
        except control.ControlError as exc:
            return error(502, "lift_failed", str(exc))
        events.landed.pop(service, None)
        events.expected_faults[service] = {}
        events.event("fault", f"{service}: fault lifted by the control room, {how}")
        return JsonResponse({"service": service, "fault": {}, "lifted": how})
    try:
        spec = _body(request)
    except ValueError as exc:
        return error(400, "invalid", str(exc))
    try:
        status, answer = control.set_fault(service, spec)
    except control.ControlError as exc:
        return error(502, "set_failed", str(exc))
    if status != 200:
        return JsonResponse(answer, status=status)  # the service's own validation error
    events.expected_faults[service] = answer.get("fault") or {}
    if answer.get("fault"):
        events.event(
            "fault",
            f"{service}: fault set by the control room: {describe_fault(answer['fault'])}",
        )
        events.landed[service] = {"landed": None, "evidence": "checking ..."}

        def check(fault=answer["fault"]):
            result = control.landed(service, fault)
            events.landed[service] = result
            verdict = {True: "it landed", False: "it did NOT land", None: "not checked"}
            events.event("fault", f"{service}: {verdict[result['landed']]}: {result['evidence']}")

        threading.Thread(target=check, daemon=True).start()
    return JsonResponse(answer)


@write_access
@require_http_methods(["DELETE"])
def lift_all(request):
    events = watcher()
    lifted = {}
    for service in graph.SERVICES:
        try:
            lifted[service] = control.lift_fault(service)
        except control.ControlError as exc:
            lifted[service] = f"failed: {exc}"
        events.landed.pop(service, None)
    events.event("fault", "every fault lifted by the control room")
    return JsonResponse({"lifted": lifted})


@write_access
@require_POST
def process(request, name: str, action: str):
    if action not in ("stop", "start"):
        return error(404, "no_such_action", "Actions: stop, start.")
    try:
        control.control_process(name, action)
    except control.ControlError as exc:
        return error(409, "process_control_failed", str(exc))
    watcher().event("process", f"{name}: {action} by the control room")
    return JsonResponse({"program": name, "action": action, "done": True})


@write_access
@require_POST
def resilience(request):
    try:
        enabled = _body(request).get("enabled")
    except ValueError as exc:
        return error(400, "invalid", str(exc))
    if not isinstance(enabled, bool):
        return error(400, "invalid", 'Send {"enabled": true} or {"enabled": false}.')
    events = watcher()
    what = f"restart the stack with resilience {'on' if enabled else 'off'}"
    try:
        _job.start(what, lambda: control.set_resilience(enabled, events.event), events.event)
    except control.ControlError as exc:
        return error(409, "busy", str(exc))
    events.event("job", f"{what}: started by the control room")
    return JsonResponse({"started": what}, status=202)


@write_access
@require_POST
def run_scenario(request, name: str):
    if name not in _scenario_names():
        return error(404, "no_such_scenario", f"No scenario {name!r}.")
    events = watcher()
    what = f"scenario {name} on this stack"
    try:
        _job.start(what, lambda: control.run_scenario(name, events.event), events.event)
    except control.ControlError as exc:
        return error(409, "busy", str(exc))
    events.event("job", f"{what}: started by the control room")
    return JsonResponse({"started": what}, status=202)
