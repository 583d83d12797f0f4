from django.core.management.base import BaseCommand, CommandError

from workshop.stack import SERVICES, Stack, StackError

PROGRAMS = (*SERVICES, "orders-worker", "inventory-sweeper")


class Command(BaseCommand):
    help = "Run the local stack: up [--foreground] | down | status | stop NAME | start NAME."

    def add_arguments(self, parser):
        parser.add_argument("action", choices=["up", "down", "status", "stop", "start", "restart"])
        parser.add_argument(
            "name", nargs="?", help=f"for stop/start/restart: one of {', '.join(PROGRAMS)}"
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
            else:
                if name not in PROGRAMS:
                    raise CommandError(f"stack {action} needs a NAME: one of {', '.join(PROGRAMS)}")
                if not stack.running():
                    raise CommandError("the stack is not running: `manage.py stack up` first")
                self.stdout.write(stack.ctl(action, name).strip())
        except StackError as exc:
            raise CommandError(str(exc)) from exc
        return None

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
