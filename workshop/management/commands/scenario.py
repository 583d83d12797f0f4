import dataclasses
import time
from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from workshop.scenarios import report, runner
from workshop.scenarios.catalog import SCENARIOS


class Command(BaseCommand):
    help = (
        "Run a failure scenario (docs/scenarios.md) on a fresh stack (or on the running one, "
        "to watch it in the control room): `scenario list`, "
        "`scenario run NAME [--compare | --on-stack] [--seed N] [--duration S]`."
    )

    def add_arguments(self, parser):
        parser.add_argument("action", choices=["list", "run"])
        parser.add_argument("name", nargs="?", help=f"one of {', '.join(SCENARIOS)}")
        parser.add_argument(
            "--compare",
            action="store_true",
            help="run it twice, without resilience (ENABLED: False everywhere) then with, "
            "and print both side by side",
        )
        parser.add_argument(
            "--seed",
            type=int,
            default=1,
            help="the nemesis's seed (chaos-monkey): the same seed, the same choices",
        )
        parser.add_argument(
            "--pauses",
            action="store_true",
            help="the nemesis (chaos-monkey) also pauses processes (SIGSTOP) past their leases, "
            "a task worker among them while it runs a task, then resumes them (SIGCONT)",
        )
        parser.add_argument(
            "--workers",
            type=int,
            choices=[1, 2, 3, 4],
            help="task workers of the fresh stack (ORDERS_TASK_WORKERS; default: 1)",
        )
        parser.add_argument(
            "--duration",
            type=float,
            help="seconds of load (default: the scenario's own); a shorter run for a workshop",
        )
        parser.add_argument(
            "--on-stack",
            action="store_true",
            help="run on the stack `make up` started, as it runs (resilience on or off), "
            "instead of a fresh one: the control room shows it live",
        )
        parser.add_argument(
            "--out",
            type=Path,
            help="where to write the JSON and the PNG chart (default: var/scenarios/)",
        )

    def handle(
        self,
        *args,
        action,
        name=None,
        compare=False,
        out=None,
        seed=1,
        duration=None,
        on_stack=False,
        pauses=False,
        workers=None,
        **options,
    ):
        if action == "list":
            width = max(len(n) for n in SCENARIOS)
            for scenario in SCENARIOS.values():
                self.stdout.write(f"{scenario.name:<{width}}  {scenario.summary}")
            return
        if name not in SCENARIOS:
            raise CommandError(
                f"unknown scenario {name!r}: one of {', '.join(SCENARIOS)} (`scenario list`)"
            )
        scenario = SCENARIOS[name]
        if duration is not None:
            if not 5 <= duration <= 600:
                raise CommandError("--duration must be between 5 and 600 seconds")
            last = max((step.at for step in scenario.steps), default=0)
            if duration <= last:
                raise CommandError(
                    f"{name}'s last step is at {last:g} s: --duration must be longer than that"
                )
            scenario = dataclasses.replace(
                scenario, profile=dataclasses.replace(scenario.profile, duration=duration)
            )
        if (pauses or workers) and not scenario.nemesis:
            raise CommandError(f"--pauses and --workers are the nemesis's: {name} has none")
        stack = None
        if on_stack:
            if compare:
                raise CommandError(
                    "--compare needs two fresh stacks; on the running one, switch with "
                    "`manage.py stack resilience off|on` and run twice"
                )
            from workshop.stack import Stack, StackError

            try:
                stack = Stack(out=lambda line: None).attached()
            except StackError as exc:
                raise CommandError(str(exc)) from exc
            if scenario.env:
                settings_ = ", ".join(f"{k}={v}" for k, v in scenario.env.items())
                self.stderr.write(
                    f"note: on the running stack, {name} runs without the settings of its own "
                    f"stack ({settings_}): the stack keeps its own"
                )
        out = out or Path(settings.VAR_DIR) / "scenarios"
        out.mkdir(parents=True, exist_ok=True)
        began = time.monotonic()
        results = []
        for resilience in [False, True] if compare else [stack.resilience if stack else True]:
            results.append(
                runner.run(
                    scenario,
                    resilience=resilience,
                    stack=stack,
                    out=lambda line: self.stderr.write(line),
                    seed=seed,
                    pauses=pauses,
                    workers=workers,
                )
            )
        table = report.table(scenario, results)
        self.stdout.write("\n" + table + "\n")
        stem = f"{name}-compare" if compare else name
        if scenario.nemesis:
            stem += f"-seed{seed}"
            if pauses:
                stem += "-pauses"
            if workers:
                stem += f"-workers{workers}"
        if on_stack:
            stem += "-live"
        report.write_json(out / f"{stem}.json", scenario, results)
        (out / f"{stem}.txt").write_text(table + "\n")  # the control room shows it
        report.write_chart(out / f"{stem}.png", scenario, results)
        self.stdout.write(
            f"\nraw results: {out / f'{stem}.json'}\nchart:       {out / f'{stem}.png'}\n"
            f"({time.monotonic() - began:.0f} s in all)"
        )
        if not results[-1].resilience:
            self.stdout.write("(resilience is off on this stack: the checks were not run)")
        elif results[-1].failed_checks:
            raise CommandError(
                f"{len(results[-1].failed_checks)} check(s) failed with resilience on (see above)"
            )
