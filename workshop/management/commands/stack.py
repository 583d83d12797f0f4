from django.core.management.base import BaseCommand, CommandError

from workshop.stack import CONSOLE, SERVICES, Stack, StackError

PROGRAMS = (*SERVICES, "orders-worker", "inventory-sweeper", CONSOLE)


class Command(BaseCommand):
    help = (
        "Run the local stack: up [--foreground] | down | status | stop NAME | start NAME | "
        "restart NAME | resilience on|off."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "action", choices=["up", "down", "status", "stop", "start", "restart", "resilience"]
        )
        parser.add_argument(
            "name",
            nargs="?",
            help=f"for stop/start/restart: one of {', '.join(PROGRAMS)}; for resilience: on, off",
        )
        parser.add_argument(
            "--foreground",
            action="store_true",
            help="with up: stay in the foreground; Ctrl-C stops everything",
        )

    def handle(self, *args, action, name=None, foreground=False, **options):
        stack = Stack(out=self.stdout.write)
        try:
            if action == "up" and foreground:
                self._exit(stack.up_foreground())
            elif action == "up":
                stack.up()
            elif action == "down":
                stack.down()
            elif action == "status":
                self._status(stack)
            elif action == "resilience":
                self._resilience(stack, name)
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
