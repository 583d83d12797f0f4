"""Every workshop lab page, run as written, against a real stack (Istio's ``make snips``).

Each ```sh block of docs/labs/NN-*.md is extracted in order and run in one bash session, the
way a learner would paste them, against this module's stack: the pages' ports (8000-8005,
8080, 9099) and ``var/`` become the stack's, ``.venv/bin/python`` this interpreter. The first
block starts the lab; right after it, the lab's checkpoint must fail (nothing done yet); the
page's own checkpoint block, after the steps, must pass. A block under a
``<!-- labs: not run -->`` line is skipped (lab 9's cluster step: no cluster here).

The labs run in their order on one stack, as a workshop would run them, each cleaning up
after itself; a lab that leaves a fault or a changed policy behind breaks the next one.
"""

import os
import re
import signal
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlparse

import pytest

from tests.e2e.conftest import ROOT
from workshop.labs.catalog import LABS
from workshop.scenarios.stack import RunningStack, free_ports

pytestmark = [pytest.mark.e2e, pytest.mark.labs]

BLOCK = re.compile(r"(<!-- labs: not run -->\n\s*)?```sh\n(.*?)```", re.S)
PORTS = {
    "8000": "gateway",
    "8001": "orders",
    "8002": "payments",
    "8003": "inventory",
    "8004": "notifications",
    "8005": "recommendations",
    "8080": "console",
}


def blocks(page: Path) -> list[str]:
    """The page's ```sh blocks, in order, without the ones marked not to run."""
    return [
        re.sub(r"^ {3}", "", body, flags=re.M)  # the blocks of a numbered list are indented
        for skipped, body in BLOCK.findall(page.read_text())
        if not skipped
    ]


def test_blocks_are_found_and_the_skip_marker_works():
    lab9 = blocks(ROOT / LABS["app-vs-mesh"].page)
    assert lab9[0].strip() == ".venv/bin/python manage.py lab start app-vs-mesh"
    assert not any("kubectl apply" in block for block in lab9)
    assert any("mesh export istio --out var/mesh/istio.yaml" in block for block in lab9)


# Timings the scenario stacks shorten so that a run drains in seconds: the labs run with
# `make up`'s own, as a learner's stack has them.
SHORTENED = (
    "ORDERS_SETTLE_BACKOFF_INITIAL",
    "ORDERS_SETTLE_BACKOFF_MAX",
    "ORDERS_SAFETY_NET_DELAY",
    "ORDERS_PENDING_MAX_AGE",
    "ORDERS_PAYMENT_PENDING_MAX_AGE",
    "ORDERS_RECONCILE_INTERVAL",
    "ORDERS_WORKER_DEAD_AFTER",
    "PAYMENTS_IN_FLIGHT_LEASE",
    "NOTIFICATIONS_SEND_LEASE",
)
# What a lab that failed half-way may have left: lifted, so that the next lab starts clean.
CLEAN_UP = """
.venv/bin/python manage.py lab prometheus stop || true
.venv/bin/python manage.py stack start recommendations || true
.venv/bin/python manage.py stack lift || true
.venv/bin/python manage.py stack resilience on || true
.venv/bin/python manage.py stack policy reset || true
"""


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    running = RunningStack(tmp_path_factory.mktemp("labs"))
    for name in SHORTENED:
        running.env.pop(name)
    with running:
        yield running


@pytest.fixture(scope="module")
def prometheus_url():
    return f"http://127.0.0.1:{free_ports(1)[0]}"


def for_stack(block: str, stack, prometheus_url: str) -> str:
    def port(match: re.Match) -> str:
        if match.group(1) == "9099":
            return urlparse(prometheus_url).netloc
        return urlparse(stack.urls[PORTS[match.group(1)]]).netloc

    block = re.sub(r"(?:localhost|127\.0\.0\.1):(800[0-5]|8080|9099)\b", port, block)
    block = re.sub(r"(?<![\w/.-])var/", f"{stack.var_dir}/", block)
    return block.replace(".venv/bin/python", sys.executable)


@pytest.mark.timeout(420)
@pytest.mark.parametrize("slug", list(LABS))
def test_lab_page_runs_and_its_checkpoint_fails_before_and_passes_after(
    stack, prometheus_url, slug
):
    lab = LABS[slug]
    found = blocks(ROOT / lab.page)
    start = f".venv/bin/python manage.py lab start {slug}"
    check = f".venv/bin/python manage.py lab check {slug}"
    assert found[0].strip() == start or found[0].startswith(start + "\n"), (
        f"{lab.page}: the first block must start the lab"
    )
    assert any(block.strip() == check for block in found), f"{lab.page}: no checkpoint block"
    too_early = (
        f"if {sys.executable} manage.py lab check {slug} --wait 0; then\n"
        "  echo 'THE CHECKPOINT PASSED BEFORE THE STEPS'; exit 97\n"
        "fi\n"
    )
    script = ["set -e -o pipefail"]
    for n, block in enumerate(found):
        script.append(f"echo '--- block {n + 1} of {lab.page}'")
        script.append(for_stack(block, stack, prometheus_url))
        if n == 0:
            script.append(too_early)
    env = {**stack.env, "LAB_PROMETHEUS_URL": prometheus_url}
    returncode, output = run(script, env)
    if returncode:
        run([for_stack(CLEAN_UP, stack, prometheus_url)], env)
    assert returncode == 0, f"{lab.page} failed:\n{output[-8000:]}\n{stack.logs()}"
    assert "still missing" in output, "the checkpoint did not fail right after lab start"
    assert f"Lab {lab.number} ({slug}) is done." in output


def run(script: list[str], env: dict, timeout: float = 400) -> tuple[int | None, str]:
    """Run the script in a bash of its own process group; on timeout, kill the whole group
    (a Chaos Monkey left running would go on killing the stack of the next lab)."""
    process = subprocess.Popen(
        ["bash", "-c", "\n".join(script)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        output, _ = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        output, _ = process.communicate()
        return None, f"{output}\n(killed after {timeout:g} s)"
    return process.returncode, output
