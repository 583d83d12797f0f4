"""A throwaway stack for one scenario or one test module: every service on free 127.0.0.1
ports, in a directory of its own, with its own chaos token; PostgreSQL databases and Redis
keys of its own too when ``DATABASE_URL`` is PostgreSQL and ``REDIS_URL`` is set.

It runs ``manage.py stack up`` in a child process with this environment, so it is the same
supervisor + gunicorn stack as ``make up``, only elsewhere.
"""

import contextlib
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import uuid
from pathlib import Path
from urllib.parse import urlparse

import requests
from prometheus_client.parser import text_string_to_metric_families

ROOT = Path(__file__).resolve().parents[2]
SERVICES = ("gateway", "orders", "payments", "inventory", "notifications", "recommendations")
CONSOLE = "console"
STARTUP_TIMEOUT = 120


def free_ports(n: int) -> list[int]:
    """``n`` distinct free ports (all held at once while choosing, so they differ)."""
    sockets = [socket.socket() for _ in range(n)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


class RunningStack:
    def __init__(
        self,
        var_dir: Path,
        *,
        resilience: bool = True,
        redis_url: str | None = None,
        env: dict[str, str] | None = None,
    ) -> None:
        # Several stacks may run one after another: each its own databases, Redis keys, token.
        self.id = f"{os.getpid()}_{uuid.uuid4().hex[:8]}"
        self.var_dir = Path(var_dir)
        self.resilience = resilience
        self.faulted: set[str] = set()  # services with a fault injected through /chaos/
        self.stopped: set[str] = set()  # programs stopped with stop()
        self.paused: dict[int, str] = {}  # pid or process group -> what was paused (SIGSTOP)
        self.urls = {
            name: f"http://127.0.0.1:{port}"
            for name, port in zip((*SERVICES, CONSOLE), free_ports(len(SERVICES) + 1), strict=True)
        }
        self.env = {
            **{
                k: v
                for k, v in os.environ.items()
                if k not in ("DATABASE_URL", "DJANGO_SETTINGS_MODULE", "CHAOS_TOKEN")
            },
            "DJANGO_SETTINGS_MODULE": "booking.settings.workshop",
            "BOOKING_VAR_DIR": str(self.var_dir),
            # The worker retries unsettled orders every 1-2 s instead of backing off to 30 s,
            # so that a run's queued work drains in seconds after the fault is lifted.
            "ORDERS_SETTLE_BACKOFF_INITIAL": "1",
            "ORDERS_SETTLE_BACKOFF_MAX": "2",
            # Leases and lifetimes short enough for a run to settle within a minute or two,
            # each still above what it must outlast (manage.py budgets checks the first).
            "ORDERS_SAFETY_NET_DELAY": "12",
            "ORDERS_PENDING_MAX_AGE": "30",
            "ORDERS_PAYMENT_PENDING_MAX_AGE": "120",
            "ORDERS_RECONCILE_INTERVAL": "2",
            "ORDERS_WORKER_DEAD_AFTER": "6",
            "PAYMENTS_IN_FLIGHT_LEASE": "10",
            "NOTIFICATIONS_SEND_LEASE": "5",
            "GUNICORN_WORKERS": "2",
            "CHAOS_TOKEN": f"stack-{self.id}-{uuid.uuid4().hex}",
            "RESILIENCE_ENABLED": "1" if resilience else "0",
            **{f"{name.upper()}_URL": url for name, url in self.urls.items()},
        }
        database_url = os.environ.get("DATABASE_URL", "")
        if database_url.startswith("postgres"):
            base = urlparse(database_url)
            self.env["STACK_DATABASE_URL"] = base._replace(
                path=f"/stack_{self.id}_{{service}}"
            ).geturl()
        self.env.update(env or {})
        self.redis_url = redis_url or os.environ.get("REDIS_URL")
        if self.redis_url:
            self.env["RESILIENCE_STORAGE_URL"] = self.redis_url
            self.env["CACHE_URL"] = self.redis_url
            self.env["BOOKING_NAMESPACE"] = f"stack-{self.id}"

    @classmethod
    def attach(
        cls, var_dir: Path, urls: dict[str, str], token: str, *, resilience: bool = True
    ) -> "RunningStack":
        """A stack that is already running (``make up``'s, for the control room): read,
        faulted and driven like any other, but never started or stopped by this object."""
        stack = cls.__new__(cls)
        stack.id = "attached"
        stack.var_dir = Path(var_dir)
        stack.resilience = resilience
        stack.faulted, stack.stopped, stack.paused = set(), set(), {}
        stack.urls = dict(urls)
        stack.env = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "booking.settings.workshop",
            "BOOKING_VAR_DIR": str(stack.var_dir),
            "CHAOS_TOKEN": token,
        }
        stack.redis_url = None
        return stack

    # -- lifecycle -----------------------------------------------------------------------------

    def manage(self, *args: str, timeout: float = 180, service: str | None = None):
        """``manage.py ARGS`` with this stack's environment (and a service's settings)."""
        env = dict(self.env)
        if service:
            env["DJANGO_SETTINGS_MODULE"] = f"booking.settings.{service}"
            template = env.get("STACK_DATABASE_URL")
            if template:
                env["DATABASE_URL"] = template.format(service=service)
        return subprocess.run(
            [sys.executable, "manage.py", *args],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def up(self) -> None:
        done = self.manage("stack", "up", timeout=STARTUP_TIMEOUT + 60)
        if done.returncode:
            raise RuntimeError(f"stack up failed:\n{done.stdout}\n{done.stderr}\n{self.logs()}")

    def down(self) -> None:
        self.resume_all()  # a stopped process would only die at supervisor's SIGKILL
        self.manage("stack", "down", timeout=60)
        self.cleanup()

    def __enter__(self) -> "RunningStack":
        try:
            self.up()
        except BaseException:
            self.down()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.down()

    def cleanup(self) -> None:
        """Drop this stack's PostgreSQL databases and Redis keys, if it had any."""
        if "STACK_DATABASE_URL" in self.env:
            self.manage(
                "shell",
                "-c",
                "from workshop.stack import Stack; Stack().drop_databases()",
                timeout=60,
            )
        if "BOOKING_NAMESPACE" in self.env:
            import redis

            client = redis.Redis.from_url(self.redis_url)
            namespace = self.env["BOOKING_NAMESPACE"]
            keys = [*client.scan_iter(f"{namespace}:*"), *client.scan_iter(f":*:{namespace}*")]
            if keys:
                client.delete(*keys)

    def logs(self) -> str:
        parts = []
        for log in sorted((self.var_dir / "log").glob("*.log")):
            parts.append(f"--- {log.name}\n" + "\n".join(log.read_text().splitlines()[-15:]))
        return "\n".join(parts)

    # -- talking to it -------------------------------------------------------------------------

    def url(self, service: str, path: str) -> str:
        return self.urls[service] + path

    @property
    def chaos_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.env['CHAOS_TOKEN']}"}

    def inject(self, service: str, fault: dict) -> None:
        # Marked before it is sent: a request that times out (the service paused, or too busy)
        # may still be applied once the service reads it, and recover() must lift it then.
        self.faulted.add(service)
        requests.put(
            self.url(service, "/chaos/"), json=fault, headers=self.chaos_headers, timeout=5
        ).raise_for_status()

    def lift(self, service: str) -> str:
        """Lift the service's fault through its chaos API; if the service is too busy to answer
        (its own threads all held by the fault), clear it on the machine (``manage.py chaos
        clear``) as an operator would. Says which it did."""
        try:
            requests.delete(
                self.url(service, "/chaos/"), headers=self.chaos_headers, timeout=5
            ).raise_for_status()
            how = "through /chaos/"
        except requests.RequestException as exc:
            done = self.manage("chaos", "clear", service=service, timeout=60)
            if done.returncode:
                raise RuntimeError(f"{service}: chaos clear failed: {done.stderr}") from exc
            how = f"with manage.py chaos clear (/chaos/: {type(exc).__name__})"
        self.faulted.discard(service)
        return how

    def recover(self) -> list[str]:
        """Resume every process paused, lift every fault injected and start every program
        stopped, through this object; what was done, one line each."""
        done = [f"{what}: resumed (SIGCONT)" for what in self.resume_all()]
        for service in sorted(self.faulted):
            done.append(f"{service}: fault lifted {self.lift(service)}")
        for program in sorted(self.stopped):
            self.start(program)
            done.append(f"{program}: started again")
        return done

    def stop(self, program: str) -> None:
        done = self.manage("stack", "stop", program, timeout=60)
        if done.returncode:
            raise RuntimeError(f"stack stop {program}: {done.stdout}{done.stderr}")
        self.stopped.add(program)

    def start(self, program: str) -> None:
        done = self.manage("stack", "start", program, timeout=60)
        if done.returncode:
            raise RuntimeError(f"stack start {program}: {done.stdout}{done.stderr}")
        self.stopped.discard(program)
        if program in SERVICES:
            self.wait_for(lambda: self.healthy(program))

    # -- processes, killed for real ------------------------------------------------------------

    def supervisor(self):
        """supervisord's XML-RPC interface, over its unix socket."""
        from workshop.stack import supervisor_rpc

        return supervisor_rpc(self.var_dir / "stack" / "supervisor.sock")

    def pid(self, program: str) -> int | None:
        """The pid of a program's main process (gunicorn's master), or None if not running."""
        info = self.supervisor().getProcessInfo(program)
        return info["pid"] if info["statename"] == "RUNNING" and info["pid"] else None

    def sigkill(self, program: str) -> int | None:
        """SIGKILL a program and every process of its group (a gunicorn master and its
        workers): a crash, not a stop. Supervisor starts it again. The pid killed, or None."""
        pid = self.pid(program)
        if pid is None:
            return None
        try:
            os.killpg(pid, signal.SIGKILL)
        except ProcessLookupError:
            return None
        return pid

    def crash(self, program: str, *, stay_down: bool = False) -> None:
        """SIGKILL a program (``sigkill``); with ``stay_down``, stop the instance supervisor
        starts in its place, until ``recover``/``start``."""
        killed = self.sigkill(program)
        if killed is None:
            raise RuntimeError(f"{program} was not running")
        if stay_down:

            def restarting() -> bool:
                info = self.supervisor().getProcessInfo(program)
                return info["statename"] in ("STARTING", "BACKOFF") or (
                    info["statename"] == "RUNNING" and info["pid"] != killed
                )

            self.wait_for(restarting, timeout=30, interval=0.02)
            self.supervisor().stopProcess(program, True)
            self.stopped.add(program)

    def worker_pids(self, service: str) -> list[int]:
        """The gunicorn worker processes of a service (children of its master)."""
        master = self.pid(service)
        if master is None:
            return []
        children = Path(f"/proc/{master}/task/{master}/children")
        try:
            return [int(pid) for pid in children.read_text().split()]
        except OSError:
            return []

    def sigkill_worker(self, service: str, choose) -> int | None:
        """SIGKILL one gunicorn worker process of ``service`` (``choose`` picks from the
        list); its master starts another. The pid killed, or None."""
        pids = self.worker_pids(service)
        if not pids:
            return None
        pid = choose(pids)
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            return None
        return pid

    def task_workers(self) -> list[str]:
        """The task workers' programs this stack runs (``orders-worker``, ``orders-worker-2``
        ...), from supervisor."""
        names = [info["name"] for info in self.supervisor().getAllProcessInfo()]
        return sorted(n for n in names if n == "orders-worker" or n.startswith("orders-worker-"))

    def program_of(self, pid: int) -> str | None:
        """The program whose main process is ``pid`` (None: none, or no longer)."""
        for info in self.supervisor().getAllProcessInfo():
            if info["statename"] == "RUNNING" and info["pid"] == pid:
                return info["name"]
        return None

    # -- processes, paused for real ------------------------------------------------------------

    def pause(self, program: str) -> int | None:
        """SIGSTOP a program's whole process group: it holds its sockets, locks and leases but
        runs no line until ``resume``. Supervisor still sees it RUNNING, as a platform sees a
        process stalled by a long GC pause, a frozen VM or a full disk. The group, or None."""
        pid = self.pid(program)
        if pid is None or -pid in self.paused:
            return None
        try:
            os.killpg(pid, signal.SIGSTOP)
        except ProcessLookupError:
            return None
        self.paused[-pid] = program
        return pid

    def pause_worker(self, service: str, choose) -> int | None:
        """SIGSTOP one gunicorn worker process of ``service`` (``choose`` picks from the list).
        Its master is not paused: it sees the worker's heartbeat stop, and kills it only after
        gunicorn's timeout (60 s). The pid, or None."""
        pids = [pid for pid in self.worker_pids(service) if pid not in self.paused]
        if not pids:
            return None
        pid = choose(pids)
        try:
            os.kill(pid, signal.SIGSTOP)
        except ProcessLookupError:
            return None
        self.paused[pid] = f"a gunicorn worker of {service} (pid {pid})"
        return pid

    def resume(self, pid: int) -> bool:
        """SIGCONT what ``pause`` (the group ``pid``) or ``pause_worker`` (the process ``pid``)
        stopped; False if it is gone (killed meanwhile: nothing to resume)."""
        key = -pid if -pid in self.paused else pid
        if self.paused.pop(key, None) is None:  # resumed already (by another thread)
            return False
        try:
            if key < 0:
                os.killpg(pid, signal.SIGCONT)
            else:
                os.kill(pid, signal.SIGCONT)
        except ProcessLookupError:
            return False
        return True

    def resume_all(self) -> list[str]:
        """SIGCONT everything still paused; what was resumed, one name each."""
        resumed = []
        for key, what in sorted(self.paused.items()):
            if self.resume(abs(key)):
                resumed.append(what)
        return resumed

    def all_running(self) -> list[str]:
        """Programs supervisor does not have RUNNING (empty when all are)."""
        return [
            info["name"]
            for info in self.supervisor().getAllProcessInfo()
            if info["statename"] != "RUNNING"
        ]

    def query(self, service: str, sql: str, params=()) -> list[tuple]:
        """Rows of ``sql`` on a service's own database, read directly (fast enough to poll)."""
        template = self.env.get("STACK_DATABASE_URL")
        if template:
            import psycopg

            with psycopg.connect(template.format(service=service), autocommit=True) as conn:
                return conn.execute(sql.replace("?", "%s"), params).fetchall()
        path = self.var_dir / "db" / f"{service}.sqlite3"
        with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)) as c:
            return c.execute(sql, params).fetchall()

    def healthy(self, service: str) -> bool:
        try:
            return requests.get(self.url(service, "/health/"), timeout=2).status_code == 200
        except requests.RequestException:
            return False

    def metrics(self, service: str) -> list[tuple[str, dict[str, str], float]]:
        """Every sample of the service's /metrics as (name, labels, value); [] if no answer."""
        try:
            text = requests.get(self.url(service, "/metrics"), timeout=5).text
        except requests.RequestException:
            return []
        return [
            (sample.name, sample.labels, sample.value)
            for family in text_string_to_metric_families(text)
            for sample in family.samples
        ]

    def ledger(self, services=("orders", "payments", "inventory", "notifications")) -> dict:
        """What the services' databases hold that an audit needs (``manage.py ledger``)."""
        ledger = {}
        for service in services:
            done = self.manage("ledger", service=service, timeout=60)
            if done.returncode:
                raise RuntimeError(f"{service} ledger: {done.stderr}")
            ledger.update(json.loads(done.stdout))
        return ledger

    def wait_for(self, predicate, timeout: float = 30.0, interval: float = 0.25):
        end = time.monotonic() + timeout
        while True:
            value = predicate()
            if value:
                return value
            if time.monotonic() > end:
                raise AssertionError(f"not true within {timeout} s")
            time.sleep(interval)
