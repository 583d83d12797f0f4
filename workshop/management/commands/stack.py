import json

from django.core.management.base import BaseCommand, CommandError

from workshop.stack import CONSOLE, SERVICES, Stack, StackError

PROGRAMS = (*SERVICES, "orders-worker", "inventory-sweeper", CONSOLE)


class Command(BaseCommand):
    help = (
        "Run the local stack: up [--foreground] | down | status | stop NAME | start NAME | "
        "restart NAME | resilience on|off | policy NAME SECTION.KEY=VALUE ... | policy reset | "
        "lift [SERVICE] (every fault, or one service's) | token (print the chaos token)."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "action",
            choices=[
                "up",
                "down",
                "status",
                "stop",
                "start",
                "restart",
                "resilience",
                "policy",
                "lift",
                "token",
            ],
        )
        parser.add_argument(
            "name",
            nargs="?",
            help=f"for stop/start/restart: one of {', '.join(PROGRAMS)}; for resilience: on, off",
        )
        parser.add_argument(
            "assignments",
            nargs="*",
            metavar="SECTION.KEY=VALUE",
            help="for policy: SECTION.KEY=VALUE (e.g. TIMEOUT.READ=0.4), values as JSON",
        )
        parser.add_argument(
            "--foreground",
            action="store_true",
            help="with up: stay in the foreground; Ctrl-C stops everything",
        )

    def handle(self, *args, action, name=None, assignments=(), foreground=False, **options):
        stack = Stack(out=self.stdout.write)
        try:
            if action == "up" and foreground:
                self._exit(stack.up_foreground())
            elif action == "up":
                stack.up()
            elif action == "down":
                stack.down()
                from workshop.labs import prometheus  # lab 7's, if it still runs

                if prometheus.pid() is not None:
                    prometheus.stop(self.stdout.write)
            elif action == "status":
                self._status(stack)
            elif action == "resilience":
                self._resilience(stack, name)
            elif action == "policy":
                self._policy(stack, name, assignments)
            elif action == "lift":
                self._lift(name)
            elif action == "token":  # for scripts: TOKEN=$(manage.py stack token)
                self.stdout.write(stack.chaos_token())
            else:
                if name not in PROGRAMS:
                    raise CommandError(f"stack {action} needs a NAME: one of {', '.join(PROGRAMS)}")
                self._running(stack)
                self.stdout.write(stack.ctl(action, name).strip())
        except StackError as exc:
            raise CommandError(str(exc)) from exc
        return None

    def _running(self, stack: Stack) -> None:
        if not stack.running():
            raise CommandError("the stack is not running: `manage.py stack up` first")

    def _resilience(self, stack: Stack, mode: str | None) -> None:
        if mode not in ("on", "off"):
            raise CommandError("stack resilience needs on or off")
        self._running(stack)
        restarted = stack.set_resilience(mode == "on")
        stack.wait_healthy(timeout=120)
        self.stdout.write(f"Resilience {mode}: restarted {', '.join(restarted)}.")

    def _lift(self, name: str | None) -> None:
        """Lift faults through each service's chaos API, or on the machine when a service is
        too busy to answer it (a hang holds all its threads)."""
        from workshop.labs.progress import running_stack

        if name is not None and name not in SERVICES:
            raise CommandError(f"stack lift [SERVICE]: one of {', '.join(SERVICES)}")
        stack = running_stack()
        for service in [name] if name else SERVICES:
            try:
                self.stdout.write(f"{service}: fault lifted {stack.lift(service)}")
            except RuntimeError as exc:
                raise CommandError(str(exc)) from exc

    def _policy(self, stack: Stack, name: str | None, assignments) -> None:
        """`stack policy payments TIMEOUT.READ=0.4 RETRY.MAX_ATTEMPTS=2`, or `stack policy reset`."""
        self._running(stack)
        if name == "reset":
            changes: dict = {}
        else:
            if not name or not assignments:
                raise CommandError(
                    "stack policy NAME SECTION.KEY=VALUE ... (e.g. payments TIMEOUT.READ=0.4), "
                    "or stack policy reset"
                )
            sections: dict = {}
            for assignment in assignments:
                key, _, raw = assignment.partition("=")
                if not raw or not key:
                    raise CommandError(f"{assignment!r}: use SECTION.KEY=VALUE or KEY=VALUE")
                try:
                    value = json.loads(raw)
                except ValueError:
                    value = raw
                section, _, field = key.upper().partition(".")
                if field:
                    sections.setdefault(section, {})[field] = value
                else:
                    sections[section] = value
            changes = {name: sections}
        restarted = stack.set_policy(changes)
        shown = "as shipped" if not changes else json.dumps(changes)
        self.stdout.write(
            f"Policies {shown}: restarted {', '.join(restarted) or 'nothing (no change)'}."
        )

    def _exit(self, code: int):
        if code:
            raise CommandError(f"supervisord exited with status {code}")

    def _status(self, stack: Stack) -> None:
        if not stack.running():
            self.stdout.write("The stack is not running.")
            return
        self.stdout.write(stack.ctl("status", check=False).rstrip())
        for service, status in stack.health().items():
            self.stdout.write(f"  {service:<16} /health/ -> {status or 'no answer'}")
        self.stdout.write(f"  resilience       {'on' if stack.resilience_enabled() else 'off'}")
