import time

from django.core.management.base import BaseCommand, CommandError

from workshop.labs import prometheus, traffic
from workshop.labs.catalog import (
    LABS,
    Item,
    Lab,
    close_breakers,
    free_seats,
    leftovers,
    open_breakers,
    settle_orders,
)
from workshop.labs.progress import Since, Snapshot, labs_dir, running_stack
from workshop.stack import StackError


class Command(BaseCommand):
    help = (
        "The workshop labs of docs/labs/: `lab list`, `lab start NAME`, `lab check NAME "
        "[--wait S]` (exit 0 when done, 1 with what is missing), `lab traffic [--seconds S]`, "
        "`lab prometheus start|stop`, `lab alerts [--wait S --for ALERT]`."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "action", choices=["list", "start", "check", "traffic", "prometheus", "alerts"]
        )
        parser.add_argument(
            "name", nargs="?", help="a lab (`lab list`); for prometheus: start or stop"
        )
        parser.add_argument(
            "--wait",
            type=float,
            default=15.0,
            help="check: keep checking this many seconds before saying it is not done; "
            "alerts --for: wait this long for the alert to fire (15)",
        )
        parser.add_argument("--seconds", type=float, default=10.0, help="traffic: how long (10)")
        parser.add_argument("--browsers", type=int, default=2, help="traffic: browsing users (2)")
        parser.add_argument("--buyers", type=int, default=2, help="traffic: buying users (2)")
        parser.add_argument(
            "--orders", type=int, default=1000, help="traffic: orders per buyer at most"
        )
        parser.add_argument("--for", dest="alert", help="alerts: the alert to wait for")

    def handle(self, *args, action, name=None, **options):
        try:
            if action == "list":
                self._list()
            elif action == "start":
                self._start(self._lab(name))
            elif action == "check":
                self._check(self._lab(name), options["wait"])
            elif action == "traffic":
                self._traffic(options)
            elif action == "prometheus":
                if name not in ("start", "stop"):
                    raise CommandError("lab prometheus start|stop")
                getattr(prometheus, name)(self.stdout.write)
            else:
                self._alerts(options["alert"], options["wait"] if options["alert"] else 0)
        except (StackError, prometheus.PrometheusError) as exc:
            raise CommandError(str(exc)) from exc

    def _lab(self, name: str | None) -> Lab:
        if name not in LABS:
            raise CommandError(f"no lab {name!r}: one of {', '.join(LABS)} (`manage.py lab list`)")
        return LABS[name]

    def _list(self) -> None:
        width = max(len(slug) for slug in LABS)
        for lab in LABS.values():
            started = labs_dir() / f"{lab.slug}.json"
            when = (
                time.strftime("started %H:%M:%S", time.localtime(started.stat().st_mtime))
                if started.exists()
                else ""
            )
            self.stdout.write(f"{lab.number}  {lab.slug:<{width}}  {lab.title}  {when}".rstrip())
            self.stdout.write(f"   {'':<{width}}  {lab.page}")

    def _start(self, lab: Lab) -> None:
        path = labs_dir() / f"{lab.slug}.json"
        if lab.stack:
            stack = running_stack()
            # From a settled stack: an order an earlier lab left half-way, settled while the
            # ledgers are read one service after another, would read as damage (issue 14).
            self.stdout.write(f"Lab {lab.number}, {lab.title}: settling what earlier labs left ...")
            for line in settle_orders(stack):
                self.stdout.write(self.style.WARNING(line) if line.startswith("Note") else line)
            self.stdout.write("Reading the stack ...")
            snapshot = Snapshot.take(stack, ledger=lab.ledger)
            opened = open_breakers(snapshot) if not snapshot.unread() else {}
            if opened:
                for line in close_breakers(stack, opened):
                    self.stdout.write(line)
                snapshot = Snapshot.take(stack, ledger=lab.ledger)
            if snapshot.unread():
                raise CommandError(
                    f"{', '.join(snapshot.unread())} did not answer /metrics: the checkpoint "
                    "would have nothing to count from. Is it up (`manage.py stack status`), "
                    "or still hung by a fault (`manage.py stack lift`)? Then start the lab again."
                )
            snapshot.save(path)
            for note in leftovers(snapshot):
                self.stdout.write(self.style.WARNING(note))
            self.stdout.write(free_seats(stack))
            if lab.prepare:
                self.stdout.write(lab.prepare(stack))
        else:
            Snapshot(time.time(), {}, {}).save(path)
        self.stdout.write(
            f"Lab {lab.number} started: from now on, `manage.py lab check {lab.slug}` counts "
            f"what you do. The steps: {lab.page}"
        )

    def _check(self, lab: Lab, wait: float) -> None:
        path = labs_dir() / f"{lab.slug}.json"
        if not path.exists():
            raise CommandError(f"lab {lab.slug} was not started: `manage.py lab start {lab.slug}`")
        if not 0 <= wait <= 300:
            raise CommandError("--wait must be between 0 and 300 seconds")
        start = Snapshot.load(path)
        stack = running_stack() if lab.stack else None
        deadline = time.monotonic() + wait
        while True:
            if stack is not None:
                now = Snapshot.take(stack, ledger=lab.ledger)
            else:
                now = Snapshot(time.time(), {}, {})
            items = lab.checkpoint(Since(start, now))
            items += [
                Item(f"{service} answers /metrics", False, "no answer: it counts nothing now")
                for service in now.unread()
                if stack is not None and not all(item.passed for item in items)
            ]
            if all(item.passed for item in items) or time.monotonic() >= deadline:
                break
            time.sleep(1.0)
        for item in items:
            self.stdout.write(_line(item))
        missing = sum(not item.passed for item in items)
        if missing:
            raise CommandError(
                f"lab {lab.number} ({lab.slug}) is not done yet: {missing} of {len(items)} "
                f"still missing (after {wait:g} s of checking). The steps: {lab.page}"
            )
        self.stdout.write(self.style.SUCCESS(f"Lab {lab.number} ({lab.slug}) is done."))

    def _traffic(self, options) -> None:
        seconds = options["seconds"]
        if not 1 <= seconds <= traffic.MAX_SECONDS:
            raise CommandError(f"--seconds must be between 1 and {traffic.MAX_SECONDS}")
        if not (0 <= options["browsers"] <= 50 and 0 <= options["buyers"] <= 50):
            raise CommandError("--browsers and --buyers must be between 0 and 50")
        if options["browsers"] + options["buyers"] == 0:
            raise CommandError("no users: give --browsers or --buyers")
        traffic.run(
            running_stack(),
            seconds=seconds,
            browsers=options["browsers"],
            buyers=options["buyers"],
            orders=max(1, options["orders"]),
            out=self.stdout.write,
        )

    def _alerts(self, alert: str | None, wait: float) -> None:
        if not 0 <= wait <= 300:
            raise CommandError("--wait must be between 0 and 300 seconds")
        deadline = time.monotonic() + wait
        while True:
            found = prometheus.alerts()
            firing = [
                a for a in found if a["labels"]["alertname"] == alert and a["state"] == "firing"
            ]
            if not alert or firing or time.monotonic() >= deadline:
                break
            time.sleep(1.0)
        for each in sorted(found, key=lambda a: (a["state"], a["labels"]["alertname"])):
            self.stdout.write(prometheus.describe(each))
        if not found:
            self.stdout.write("no alert pending or firing")
        if alert and not firing:
            raise CommandError(f"{alert} is not firing (waited {wait:g} s)")


def _line(item: Item) -> str:
    mark = "ok  " if item.passed else "MISSING"
    evidence = f": {item.measured}" if item.measured else ""
    return f"  [{mark:^7}] {item.description}{evidence}"
