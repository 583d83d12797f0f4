"""Lab 09, application level vs mesh level (docs/labs/09-app-vs-mesh.md): its checkpoint.

No cluster is needed, so what is checked is what can be without one: the rules the learner
exported are there, are valid Istio, say what the policies say now, and their translation names
what only the application can do.
"""

from pathlib import Path

import yaml
from django.conf import settings

from workshop import mesh

EXPORT = "var/mesh/istio.yaml"
COMMAND = f".venv/bin/python manage.py mesh export istio --out {EXPORT}"
# What every policy's "no mesh equivalent" rows must name; a policy that retries, also this one.
GAPS = ("fallback", "SLOW_CALL_RATE_THRESHOLD", "PERMITTED_CALLS_IN_HALF_OPEN_STATE", "deadline")
RETRY_GAP = "idempotency-aware retries"


def checkpoint() -> list[str]:
    """What is still missing; an empty list when the lab is done."""
    path = Path(settings.VAR_DIR) / Path(EXPORT).relative_to("var")
    if not path.exists():
        return [f"{EXPORT} does not exist: export the rules with `{COMMAND}`"]
    try:
        documents = [d for d in yaml.safe_load_all(path.read_text()) if isinstance(d, dict)]
    except yaml.YAMLError as error:
        return [f"{EXPORT} is not YAML ({error}): export it again with `{COMMAND}`"]
    # `--app-policies off` adds a ConfigMap: only the rules are the mesh's.
    rules = [d for d in documents if d.get("apiVersion") == mesh.ISTIO_API]
    missing = []
    try:
        missing += [f"{EXPORT}: {problem}" for problem in mesh.schema_problems(rules)]
    except ImportError as error:
        missing.append(str(error))
    if rules != list(yaml.safe_load_all(mesh.export("istio").rules)):
        missing.append(
            f"{EXPORT} is not what the current policies export (or it was edited, or exported "
            f"with other options): export it again with `{COMMAND}`"
        )
    return missing + unlisted_gaps()


def unlisted_gaps() -> list[str]:
    """Every policy's translation must say what the mesh cannot do for it."""
    found = []
    for edge in mesh.edges():
        listed = " ".join(
            f"{row.setting} {row.note}" for row in mesh.translate(edge.policy).missing
        )
        expected = [*GAPS, RETRY_GAP] if edge.policy.retry.max_attempts > 1 else GAPS
        found += [
            f"the translation of {edge.caller} -> {edge.callee} does not list {gap!r} "
            "among what has no mesh equivalent"
            for gap in expected
            if gap not in listed
        ]
    return found
