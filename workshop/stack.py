"""The local stack: every service as its own gunicorn process group, the task worker and the
hold sweeper, supervised by supervisor, all on 127.0.0.1.

Ports come from ``settings.SERVICE_URLS``; everything the processes write (databases, logs,
metrics, mail, supervisor's socket) goes under ``settings.VAR_DIR``. With
``STACK_DATABASE_URL`` (for example ``postgres://postgres@127.0.0.1:5432/booking_{service}``)
each service gets its own PostgreSQL database instead of its own SQLite file.
"""

import contextlib
import importlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import urlparse

import requests
from django.conf import settings

SERVICES = ("gateway", "orders", "payments", "inventory", "notifications", "recommendations")
CONSOLE = "console"  # the control room: started with the stack, never one of its faulted services
DEMO_DATA_OWNERS = ("inventory", "recommendations")
# Passed to every process, so that the same checkout behaves the same under the stack.
FORWARDED = (
    "CHAOS_ENABLED",
    "CHAOS_TOKEN",
    "RESILIENCE_ENABLED",
    "RESILIENCE_STORAGE_URL",
    "CACHE_URL",
    "BOOKING_NAMESPACE",
    "LOG_LEVEL",
    "ORDERS_SETTLE_BACKOFF_INITIAL",
    "ORDERS_SETTLE_BACKOFF_MAX",
    "ORDERS_SAFETY_NET_DELAY",
    "ORDERS_PENDING_MAX_AGE",
    "ORDERS_PAYMENT_PENDING_MAX_AGE",
    "ORDERS_WORKER_HEARTBEAT",
    "ORDERS_WORKER_DEAD_AFTER",
    "ORDERS_RECONCILE_INTERVAL",
    "PAYMENTS_IN_FLIGHT_LEASE",
    "NOTIFICATIONS_SEND_LEASE",
    "PAYMENTS_LATENCY_MIN_MS",
    "PAYMENTS_LATENCY_MAX_MS",
    "SEAT_HOLD_TTL",
    "DJANGO_SECRET_KEY",
    "GUNICORN_WORKERS",
    "GUNICORN_THREADS",
)


class StackError(Exception):
    pass


def task_workers() -> list[str]:
    """The supervisor programs of the task workers: ``orders-worker``, then ``orders-worker-2``
    and so on up to ``ORDERS_TASK_WORKERS``."""
    count = max(1, settings.ORDERS_TASK_WORKERS)
    return ["orders-worker", *(f"orders-worker-{n}" for n in range(2, count + 1))]


SUPERVISOR_USER = "stack"


def supervisor_rpc(socket_path: Path | str):
    """supervisord's XML-RPC interface over the stack's unix socket, with the stack's
    credentials (``supervisor-secret``, next to the socket; none for a stack without)."""
    import xmlrpc.client

    from supervisor.xmlrpc import SupervisorTransport

    socket_path = Path(socket_path)
    secret_file = socket_path.with_name("supervisor-secret")
    secret = secret_file.read_text().strip() if secret_file.exists() else None
    transport = SupervisorTransport(
        SUPERVISOR_USER if secret else None, secret, f"unix://{socket_path}"
    )
    return xmlrpc.client.ServerProxy("http://127.0.0.1", transport=transport).supervisor


def _interrupt(signum, frame):
    raise KeyboardInterrupt()


class Stack:
    def __init__(self, *, out: Callable[[str], None] = print) -> None:
        self.root = Path(settings.BASE_DIR)
        self.var = Path(settings.VAR_DIR)
        self.dir = self.var / "stack"
        self.conf = self.dir / "supervisord.conf"
        self.out = out
        self.python = sys.executable
        self.policy_overrides = self.dir / "policies.json"

    # -- what runs where ---------------------------------------------------------------------

    def bind(self, service: str) -> str:
        url = urlparse(settings.SERVICE_URLS[service])
        if url.hostname not in ("127.0.0.1", "localhost"):
            raise StackError(
                f"{service} is at {settings.SERVICE_URLS[service]}: the local stack only runs on 127.0.0.1"
            )
        return f"127.0.0.1:{url.port or 80}"

    def env(self, service: str) -> dict[str, str]:
        env = {
            "DJANGO_SETTINGS_MODULE": f"booking.settings.{service}",
            "BOOKING_VAR_DIR": str(self.var),
            "PYTHONUNBUFFERED": "1",
            **{f"{name.upper()}_URL": settings.SERVICE_URLS[name] for name in (*SERVICES, CONSOLE)},
        }
        template = os.environ.get("STACK_DATABASE_URL")
        if template:
            env["DATABASE_URL"] = template.format(service=service)
        # The local stack is for breaking things on purpose: chaos on, behind a token.
        env["CHAOS_ENABLED"] = "1"
        env["CHAOS_TOKEN"] = self.chaos_token()
        for name in FORWARDED:
            if name in os.environ:
                env[name] = os.environ[name]
        # A workshop's policy changes (`stack policy`): read by every process at its start.
        env["RESILIENCE_POLICY_OVERRIDES"] = str(self.policy_overrides)
        mode = self.dir / "resilience"
        if mode.exists():  # set by the control room: `stack` restarts with it
            env["RESILIENCE_ENABLED"] = "1" if mode.read_text().strip() == "on" else "0"
        return env

    def resilience_enabled(self) -> bool:
        if service_env := self.env("orders").get("RESILIENCE_ENABLED"):
            return service_env.strip().lower() not in ("0", "false", "no", "off")
        return True

    def programs(self) -> dict[str, tuple[str, dict[str, str]]]:
        """Supervisor program name -> (command, environment)."""
        programs = {}
        for service in SERVICES:
            env = {
                **self.env(service),
                "GUNICORN_BIND": self.bind(service),
                "GUNICORN_PROC_NAME": f"booking-{service}",
                "PROMETHEUS_MULTIPROC_DIR": str(self.var / "prometheus" / service),
            }
            programs[service] = (
                f"{self.python} -m gunicorn booking.wsgi:application -c booking/gunicorn_conf.py",
                env,
            )
        for name in task_workers():
            programs[name] = (
                f"{self.python} manage.py orders_worker --interval 0.5 --no-startup-delay",
                {
                    **self.env("orders"),
                    # Its calls, retries and breakers beside orders' own: orders' /metrics
                    # shows them.
                    "PROMETHEUS_MULTIPROC_DIR": programs["orders"][1]["PROMETHEUS_MULTIPROC_DIR"],
                    # Each its own alive file: one worker's beats must not hide another's death.
                    "ORDERS_WORKER_ALIVE_FILE": str(self.var / f"{name}.alive"),
                },
            )
        console = {
            key: value
            for key, value in self.env(CONSOLE).items()
            if key != "RESILIENCE_ENABLED"  # switching resilience never restarts the console
        }
        programs[CONSOLE] = (
            f"{self.python} -m gunicorn booking.wsgi:application -c booking/gunicorn_conf.py",
            {
                **console,
                "GUNICORN_BIND": self.bind(CONSOLE),
                "GUNICORN_PROC_NAME": "booking-console",
                "GUNICORN_WORKERS": "1",  # one process: one picture, one event log
                "GUNICORN_THREADS": "8",
                "CONSOLE_SUPERVISOR_SOCKET": str(self.dir / "supervisor.sock"),
            },
        )
        sweep_every = os.environ.get("SEAT_HOLD_SWEEP_EVERY", "30")
        programs["inventory-sweeper"] = (
            f"{self.python} manage.py release_expired_holds --every {sweep_every}",
            self.env("inventory"),
        )
        return programs

    # -- preparing ---------------------------------------------------------------------------------

    def manage(self, service: str, *args: str) -> None:
        env = {**{k: v for k, v in os.environ.items() if k != "DATABASE_URL"}, **self.env(service)}
        done = subprocess.run(
            [self.python, "manage.py", *args],
            cwd=self.root,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        if done.returncode:
            raise StackError(
                f"{service}: manage.py {' '.join(args)} failed:\n{done.stdout}{done.stderr}"
            )

    @contextlib.contextmanager
    def _postgres(self):
        """(connection to the server, the services' database names), or (None, []) on SQLite."""
        template = os.environ.get("STACK_DATABASE_URL")
        if not template:
            yield None, []
            return
        import psycopg

        admin = urlparse(template.format(service="x"))._replace(path="/postgres").geturl()
        names = [urlparse(template.format(service=s)).path.lstrip("/") for s in SERVICES]
        with psycopg.connect(admin, autocommit=True) as conn:
            yield conn, names

    def create_databases(self) -> None:
        """With ``STACK_DATABASE_URL``, a PostgreSQL database per service, made if missing."""
        with self._postgres() as (conn, names):
            for name in names:
                if not conn.execute(
                    "SELECT 1 FROM pg_database WHERE datname = %s", [name]
                ).fetchone():
                    conn.execute(f'CREATE DATABASE "{name}"')

    def drop_databases(self) -> None:
        """Remove the PostgreSQL databases ``create_databases`` made (tests use throwaway ones)."""
        with self._postgres() as (conn, names):
            for name in names:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def chaos_token(self) -> str:
        """``CHAOS_TOKEN`` if set, else one made for this stack (kept in var/stack/chaos-token)."""
        if os.environ.get("CHAOS_TOKEN"):
            return os.environ["CHAOS_TOKEN"]
        file = self.dir / "chaos-token"
        if not file.exists():
            import secrets

            file.parent.mkdir(parents=True, exist_ok=True)
            file.write_text(secrets.token_urlsafe(24))
            file.chmod(0o600)
        return file.read_text().strip()

    def prepare(self) -> None:
        for sub in ("db", "log", "mail", "stack", "cache", "chaos", "console", "static"):
            (self.var / sub).mkdir(parents=True, exist_ok=True)
        for fault in (self.var / "chaos").glob("*.json"):
            fault.unlink()  # a new stack starts without faults
        (self.dir / "resilience").unlink(missing_ok=True)  # and as its environment says
        self.policy_overrides.unlink(missing_ok=True)  # with the policies as shipped
        self.create_databases()
        self.out("Migrating the databases of all six services ...")
        with ThreadPoolExecutor(max_workers=3) as pool:
            list(pool.map(lambda s: self.manage(s, "migrate", "--noinput"), SERVICES))
        for service in DEMO_DATA_OWNERS:
            self.manage(service, "demo_data")
        self.write_config()

    def write_config(self) -> None:
        def quote(value: str) -> str:
            return '"' + value.replace("%", "%%").replace('"', '\\"') + '"'

        secret = self.supervisor_secret()
        lines = [
            # Only this user may connect, and with the password: a process of another user
            # on the machine cannot stop or start the stack's programs.
            "[unix_http_server]",
            f"file={self.dir / 'supervisor.sock'}",
            "chmod=0700",
            f"username={SUPERVISOR_USER}",
            f"password={secret}",
            "",
            "[supervisord]",
            f"logfile={self.var / 'log' / 'supervisord.log'}",
            f"pidfile={self.dir / 'supervisord.pid'}",
            "loglevel=warn",
            # Said so when it is the case (a container), rather than warned about at each start.
            *(["user=root"] if os.geteuid() == 0 else []),
            "",
            "[rpcinterface:supervisor]",
            "supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface",
            "",
            "[supervisorctl]",
            f"serverurl=unix://{self.dir / 'supervisor.sock'}",
            f"username={SUPERVISOR_USER}",
            f"password={secret}",
            "",
        ]
        for name, (command, env) in self.programs().items():
            lines += [
                f"[program:{name}]",
                f"command={command}",
                f"directory={self.root}",
                "environment=" + ",".join(f"{k}={quote(v)}" for k, v in env.items()),
                f"stdout_logfile={self.var / 'log' / f'{name}.log'}",
                "redirect_stderr=true",
                "stopasgroup=true",
                "killasgroup=true",
                "stopwaitsecs=10",
                # Killed (SIGKILL, a crash): started again, however often that happens.
                "autorestart=unexpected",
                "startsecs=1",
                "startretries=1000",
                "",
            ]
        self.conf.touch(mode=0o600)
        self.conf.chmod(0o600)  # it holds the chaos token and the supervisor password
        self.conf.write_text("\n".join(lines))

    def supervisor_secret(self) -> str:
        """The password of the stack's supervisord (var/stack/supervisor-secret, 0600)."""
        file = self.dir / "supervisor-secret"
        if not file.exists():
            import secrets

            file.parent.mkdir(parents=True, exist_ok=True)
            file.touch(mode=0o600)
            file.write_text(secrets.token_urlsafe(24))
        return file.read_text().strip()

    # -- running -------------------------------------------------------------------------------------

    def ctl(self, *args: str, check: bool = True) -> str:
        try:
            done = subprocess.run(
                [self.python, "-m", "supervisor.supervisorctl", "-c", str(self.conf), *args],
                capture_output=True,
                text=True,
                timeout=60,
            )
        except subprocess.TimeoutExpired as exc:
            raise StackError(
                f"supervisorctl {' '.join(args)} did not finish in 60 s: "
                "`manage.py stack status` shows what runs"
            ) from exc
        if check and done.returncode not in (0, 3):  # 3: some program is not running (status)
            raise StackError(f"supervisorctl {' '.join(args)}: {done.stdout}{done.stderr}")
        return done.stdout

    def running(self) -> bool:
        pid_file = self.dir / "supervisord.pid"
        if not pid_file.exists():
            return False
        try:
            os.kill(int(pid_file.read_text().strip()), 0)
        except (ValueError, ProcessLookupError):
            return False
        return True

    def attached(self, token: str | None = None):
        """This stack, running, as the scenario runner and the labs drive it (a
        ``RunningStack`` that never starts or stops it). ``StackError`` if it is not running."""
        from workshop.scenarios.stack import RunningStack

        if not self.running():
            raise StackError(
                "the stack is not running: start it with `make up` in another terminal"
            )
        return RunningStack.attach(
            Path(settings.VAR_DIR),
            settings.SERVICE_URLS,
            token or self.chaos_token(),
            resilience=self.resilience_enabled(),
        )

    def health(self) -> dict[str, int | None]:
        status = {}
        for service in (CONSOLE, *SERVICES):
            try:
                status[service] = requests.get(
                    f"{settings.SERVICE_URLS[service]}/health/", timeout=2
                ).status_code
            except requests.RequestException:
                status[service] = None
        return status

    def wait_healthy(self, timeout: float = 90.0, alive: Callable[[], bool] = lambda: True) -> None:
        end = time.monotonic() + timeout
        waiting = [CONSOLE, *SERVICES]
        while waiting:
            if not alive():
                raise StackError(
                    "supervisord exited while the services were starting: see var/log/"
                )
            if time.monotonic() > end:
                raise StackError(
                    f"not healthy after {timeout:.0f} s: {', '.join(waiting)} (logs in {self.var / 'log'})"
                )
            health = self.health()
            waiting = [s for s in (CONSOLE, *SERVICES) if health[s] != 200]
            if waiting:
                time.sleep(0.3)

    def set_policy(self, changes: dict[str, dict[str, dict | object]]) -> list[str]:
        """Change policies for this stack (``{"payments": {"TIMEOUT": {"READ": 0.4}}}``; an
        empty dict forgets every change), then restart the services that use them, as a
        person would after editing settings. The programs restarted. ``StackError`` for a
        policy that does not exist or a setting the checks refuse."""
        from booking.settings.base import _with_overrides
        from resilience import conf

        shipped = importlib.import_module("booking.settings.base").RESILIENCE_POLICIES
        unknown = sorted(set(changes) - set(shipped))
        if unknown:
            raise StackError(
                f"no policy {', '.join(map(repr, unknown))}: one of {', '.join(shipped)}"
            )
        before = {}
        if self.policy_overrides.exists():
            try:
                before = json.loads(self.policy_overrides.read_text())
            except ValueError:
                if changes:  # a file edited by hand: reset is the way out, not a merge
                    raise StackError(
                        f"{self.policy_overrides} is not JSON: `manage.py stack policy reset`"
                    ) from None
                before = {"default": {}}  # unknown changes: restart every user of a policy
        current = json.loads(json.dumps(before)) if changes else {}
        for name, sections in changes.items():
            entry = current.setdefault(name, {})
            for key, value in sections.items():
                entry[key] = {**entry.get(key, {}), **value} if isinstance(value, dict) else value
        candidate = self.policy_overrides.with_suffix(".new")
        candidate.write_text(json.dumps(current))
        problems = conf.validate(_with_overrides(shipped, str(candidate)))
        if problems:
            candidate.unlink()
            raise StackError("; ".join(str(p) for p in problems))
        if current:
            candidate.replace(self.policy_overrides)
        else:  # as shipped
            candidate.unlink()
            self.policy_overrides.unlink(missing_ok=True)
        return self.restart_services(self._callers({*before, *changes}))

    @staticmethod
    def _callers(policies) -> list[str]:
        """The programs that build any of these policies (every one for "default")."""
        programs = []
        for service in SERVICES:
            module = importlib.import_module(f"booking.settings.{service}")
            uses = set(getattr(module, "SERVICE_DEPENDENCIES", []))
            if "default" in policies or uses & set(policies):
                programs.append(service)
                if service == "orders":
                    programs.extend(task_workers())
        return programs

    def restart_services(self, programs=None) -> list[str]:
        """Restart these programs (by default every service and the task workers: the console
        aside) and wait until every service answers its health check."""
        programs = list(programs if programs is not None else (*SERVICES, *task_workers()))
        if programs:
            self.ctl("restart", *programs)
        self.wait_healthy(timeout=120)
        return programs

    def set_resilience(self, enabled: bool) -> list[str]:
        """Restart every service (and the worker) with resilience on or off; the programs that
        were restarted. The control room stays up."""
        (self.dir / "resilience").write_text("on" if enabled else "off")
        self.write_config()
        return self.update()

    def update(self) -> list[str]:
        """Apply a rewritten configuration to the running supervisord, as `supervisorctl
        update` does: every changed program is stopped, replaced and started."""
        proxy = supervisor_rpc(self.dir / "supervisor.sock")
        [[added, changed, removed]] = proxy.reloadConfig()
        for name in changed + removed:
            proxy.stopProcessGroup(name, True)
            proxy.removeProcessGroup(name)
        for name in changed + added:
            proxy.addProcessGroup(name)
        return sorted(changed + added)

    def supervisord(self, *, foreground: bool) -> list[str]:
        return [
            self.python,
            "-m",
            "supervisor.supervisord",
            "-c",
            str(self.conf),
            *(["-n"] if foreground else []),
        ]

    def up(self) -> None:
        if self.running():
            raise StackError(
                f"the stack is already running (supervisord pid in {self.dir}); `stack down` first"
            )
        self.prepare()
        subprocess.run(self.supervisord(foreground=False), check=True, cwd=self.root, timeout=60)
        self.wait_healthy()
        self.banner()

    def up_foreground(self) -> int:
        """Run until Ctrl-C (or SIGTERM), then stop every process this started."""
        if self.running():
            raise StackError(
                f"the stack is already running (supervisord pid in {self.dir}); `stack down` first"
            )
        self.prepare()
        child = subprocess.Popen(
            self.supervisord(foreground=True), cwd=self.root, start_new_session=True
        )
        # Our own handlers: a shell may have started us with SIGINT ignored (a background
        # job), and SIGTERM (from a process manager) must clean up as Ctrl-C does.
        previous = {sig: signal.signal(sig, _interrupt) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            self.wait_healthy(alive=lambda: child.poll() is None)
            self.banner()
            self.out("Press Ctrl-C to stop everything.")
            return child.wait()
        except KeyboardInterrupt:
            self.out("\nStopping every service ...")
            return 0
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            if child.poll() is None:
                with contextlib.suppress(StackError):
                    self.ctl("stop", "all", check=False)  # at once, as `down` does
                child.send_signal(signal.SIGTERM)  # supervisord stops each program's process group
                try:
                    child.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    os.killpg(child.pid, signal.SIGKILL)
                    child.wait()
            self.out("Stopped.")

    def down(self) -> None:
        if not self.running():
            self.out("The stack is not running.")
            return
        # Every program at once: supervisord's own shutdown stops them one after another, each
        # up to its graceful timeout (a hung request keeps a gunicorn worker 5 s).
        self.ctl("stop", "all", check=False)
        self.ctl("shutdown")
        end = time.monotonic() + 30
        while self.running() and time.monotonic() < end:
            time.sleep(0.2)
        self.out("Stopped.")

    def banner(self) -> None:
        gateway = settings.SERVICE_URLS["gateway"]
        self.out(f"\nThe concert-booking stack is up (logs in {self.var / 'log'}):")
        self.out(f"  control room     {settings.SERVICE_URLS[CONSOLE]}/")
        self.out(f"  storefront       {gateway}/")
        self.out(f"  public API       {gateway}/api/shows/   (docs: {gateway}/api/docs/)")
        for service in SERVICES:
            self.out(f"  {service:<16} {settings.SERVICE_URLS[service]}/health/  /metrics  /chaos/")
        self.out(f"\nChaos token (Authorization: Bearer ...): {self.chaos_token()}")
