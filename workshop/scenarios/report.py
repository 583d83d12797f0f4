"""What a scenario run prints and writes: one side-by-side table, the raw JSON, a PNG chart."""

import json
from pathlib import Path

from workshop.scenarios.load import ENDPOINTS, ERROR, NO_ANSWER, ORDER, summarize
from workshop.scenarios.runner import RunResult, Scenario, label, lost


def table(scenario: Scenario, results: list[RunResult]) -> str:
    """Rows of figures, one column per run (without resilience first when both ran)."""
    rows: list[tuple[str, list[str]]] = []
    endpoint_tables = [r.endpoints() for r in results]
    for endpoint in ENDPOINTS:
        if not any(endpoint in t for t in endpoint_tables):
            continue
        rows.append((endpoint, [""] * len(results)))

        def cell(t, key, fmt, endpoint=endpoint):
            return fmt(t[endpoint][key]) if endpoint in t else "-"

        rows += [
            ("  requests", [cell(t, "requests", str) for t in endpoint_tables]),
            (
                "  throughput",
                [cell(t, "throughput", lambda v: f"{v:.1f}/s") for t in endpoint_tables],
            ),
            ("  success", [cell(t, "success", lambda v: f"{v:.1%}") for t in endpoint_tables]),
            (
                "  p50 / p95 / p99",
                [
                    f"{t[endpoint]['p50']:.2f} / {t[endpoint]['p95']:.2f} / {t[endpoint]['p99']:.2f} s"
                    if endpoint in t
                    else "-"
                    for t in endpoint_tables
                ],
            ),
        ]
    rows.append(("order answers", [summarize(r.of(ORDER)) for r in results]))
    rows.append(("breaker transitions", [_transitions(r) for r in results]))
    rows.append(("retries", [_by_policy(r, "retries") for r in results]))
    rows.append(
        ("retries refused by budget", [_by_policy(r, "retry_budget_exhausted") for r in results])
    )
    rows.append(("bulkhead rejections", [_by_policy(r, "bulkhead_rejected") for r in results]))
    rows.append(
        ("calls refused by open breaker", [_by_policy(r, "breaker_not_permitted") for r in results])
    )
    rows.append(("attempts timed out", [_by_policy(r, "timeout_attempt") for r in results]))
    rows.append(("fallbacks", [_by_policy(r, "fallbacks") for r in results]))
    rows.append(
        (
            "orders placed",
            [f"{len(r.audit['orders'])} ({r.probes} while recovering)" for r in results],
        )
    )
    rows.append(("double charges", [str(len(r.audit["double_charged"])) for r in results]))
    rows.append(("lost orders", [str(len(lost(r.audit))) for r in results]))
    rows.append(("unsettled after drain", [str(len(r.audit["unsettled"])) for r in results]))
    rows.append(("oversold shows", [str(len(r.audit["oversold_shows"])) for r in results]))
    rows.append(
        (
            "drained after the fault",
            [f"{r.drain_seconds:.1f} s" if r.drain_seconds is not None else "NO" for r in results],
        )
    )
    if any(r.nemesis for r in results):
        rows.append(
            (
                "nemesis",
                [
                    f"seed {r.nemesis.get('seed')}, {r.nemesis.get('kills', 0)} SIGKILLs, "
                    f"{r.nemesis.get('pauses', 0)} pauses"
                    for r in results
                ],
            )
        )
    header = ("", [label(r.resilience) for r in results])
    width0 = max(len(name) for name, _ in [header, *rows])
    widths = [
        max(len(line) for _, values in [header, *rows] for line in _wrap(values[i]))
        for i in range(len(results))
    ]
    lines = [
        f"{scenario.name}: {scenario.summary}",
        f"load: {scenario.profile.describe()}",
        "faults: " + "; ".join(f"{s.label} at {s.at:g} s" for s in scenario.steps),
        "",
    ]
    for name, values in [header, *rows]:
        cells = [_wrap(v) for v in values]
        for i in range(max(len(c) for c in cells)):
            first = name if i == 0 else ""
            lines.append(
                f"{first:<{width0}}  "
                + "  ".join(
                    f"{(c[i] if i < len(c) else ''):>{w}}"
                    for c, w in zip(cells, widths, strict=True)
                )
            )
    for r in results:
        lines += [f"drain ({label(r.resilience)}): {note}" for note in r.drain_notes]
        if r.checks:
            lines += ["", f"checks ({label(r.resilience)}):"]
            lines += [
                f"  {'PASS' if c.passed else 'FAIL'}  {c.description}: {c.measured}"
                for c in r.checks
            ]
    return "\n".join(lines)


def _wrap(cell: str, width: int = 34) -> list[str]:
    """A long list ("a 1, b 2, ...") as several lines of at most about ``width`` characters."""
    lines, line = [], ""
    for part in cell.split(", "):
        if line and len(line) + 2 + len(part) > width:
            lines.append(line + ",")
            line = part
        else:
            line = f"{line}, {part}" if line else part
    return [*lines, line]


def _transitions(result: RunResult) -> str:
    found = result.transitions()
    return ", ".join(f"{k} x{v:g}" for k, v in sorted(found.items())) or "none"


def _by_policy(result: RunResult, counter: str) -> str:
    parts = [
        f"{service}->{policy} {counters[counter]:g}"
        for service, by_policy in sorted(result.policies.items())
        for policy, counters in sorted(by_policy.items())
        if counters.get(counter)
    ]
    return ", ".join(parts) or "0"


def write_json(path: Path, scenario: Scenario, results: list[RunResult]) -> None:
    path.write_text(
        json.dumps(
            {
                "scenario": scenario.name,
                "summary": scenario.summary,
                "runs": [r.as_dict() for r in results],
            },
            indent=1,
            default=str,
        )
    )


def write_chart(path: Path, scenario: Scenario, results: list[RunResult]) -> None:
    """Latency of every request over time, and failed requests per second, one column per run."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(
        2, len(results), figsize=(6.5 * len(results), 7), sharex=True, squeeze=False
    )
    colours = {
        e: c for e, c in zip(ENDPOINTS, ("#4c72b0", "#55a868", "#8172b2", "#c44e52"), strict=True)
    }
    end = max((s.at + s.latency for r in results for s in r.samples), default=1.0)
    for column, result in enumerate(results):
        top, bottom = axes[0][column], axes[1][column]
        for endpoint in ENDPOINTS:
            samples = result.of(endpoint)
            if samples:
                top.scatter(
                    [s.at for s in samples],
                    [s.latency for s in samples],
                    s=6,
                    alpha=0.6,
                    color=colours[endpoint],
                    label=endpoint,
                )
        top.set_title(label(result.resilience))
        top.set_ylabel("latency (s)")
        top.set_yscale("log")
        seconds = range(int(end) + 1)
        failed = [0] * len(seconds)
        total = [0] * len(seconds)
        for s in result.samples:
            total[int(s.at)] += 1
            if s.outcome in (ERROR, NO_ANSWER):
                failed[int(s.at)] += 1
        bottom.bar(seconds, total, color="#cccccc", label="requests sent")
        bottom.bar(seconds, failed, color="#c44e52", label="failed or unanswered")
        bottom.set_ylabel("requests per second")
        bottom.set_xlabel("seconds after the load started")
        for axis in (top, bottom):
            for at, _ in result.events:
                axis.axvline(at, color="#333333", linestyle=":", linewidth=1)
            axis.grid(alpha=0.3)
        for at, what in result.events:
            top.annotate(
                what,
                (at, 1),
                xycoords=("data", "axes fraction"),
                rotation=90,
                fontsize=7,
                va="top",
                ha="right",
            )
    axes[0][0].legend(fontsize=7, loc="upper right")
    axes[1][0].legend(fontsize=7, loc="upper left")
    figure.suptitle(f"{scenario.name}: {scenario.summary}")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
