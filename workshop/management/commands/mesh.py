from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from workshop.mesh import DEFAULT_WORKERS, MESHES, UnknownMesh, export


class Command(BaseCommand):
    help = (
        "Write every service's resilience policies as service-mesh rules, with a table of what "
        "translated exactly, approximately, or not at all: `mesh export istio [--out FILE]`."
    )

    def add_arguments(self, parser):
        parser.add_argument("action", choices=["export"])
        parser.add_argument("mesh", help=f"one of {', '.join(MESHES)}")
        parser.add_argument(
            "--out",
            type=Path,
            help="write the rules to this file and the table to stdout (default: the rules to "
            "stdout, the table to stderr)",
        )
        parser.add_argument(
            "--workers",
            type=int,
            default=DEFAULT_WORKERS,
            help="gunicorn processes per pod: the app's bulkheads are per process, the mesh's "
            f"connection pools per pod (default: {DEFAULT_WORKERS}, as in deploy/k8s)",
        )
        parser.add_argument(
            "--app-policies",
            choices=["on", "off"],
            default="on",
            help="off: also write the ConfigMap that turns the application's own policies off "
            "(RESILIENCE_ENABLED=0), so that only the mesh's run (default: on, both layers run)",
        )

    def handle(self, *args, action, mesh, out=None, workers, app_policies, **options):
        if workers < 1:
            raise CommandError(f"--workers must be 1 or more, got {workers}")
        try:
            result = export(mesh, workers=workers, app_policies=app_policies == "on")
        except UnknownMesh as error:
            raise CommandError(error) from None
        if out is None:
            self.stdout.write(result.rules, ending="")
            self.stderr.write(result.table, ending="")
            return
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(result.rules)
        self.stdout.write(result.table, ending="")
        self.stdout.write(f"\nrules: {out}")
