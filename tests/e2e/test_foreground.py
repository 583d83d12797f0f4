"""`make up` (the README's command): Ctrl-C must stop every process it started."""

import os
import signal
import subprocess
import threading
import time

import pytest
import requests

from tests.e2e.conftest import ROOT, SERVICES, RunningStack

pytestmark = pytest.mark.e2e


def listening(url: str) -> bool:
    try:
        requests.get(f"{url}/health/", timeout=1)
        return True
    except requests.ConnectionError:
        return False


def test_ctrl_c_stops_everything(tmp_path):
    stack = RunningStack(tmp_path)  # its own ports and directory, beside the session's stack
    process = subprocess.Popen(
        ["make", "--no-print-directory", "up"],
        cwd=ROOT,
        env=stack.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(process.stdout), daemon=True)
    reader.start()
    try:
        stack.wait_for(
            lambda: any("Press Ctrl-C" in line for line in lines), timeout=150, interval=0.2
        )
        assert all(stack.healthy(s) for s in SERVICES)
        pids = (tmp_path / "stack" / "supervisord.pid").read_text().strip()
        os.killpg(process.pid, signal.SIGINT)  # what the terminal sends on Ctrl-C
        process.wait(timeout=60)
        reader.join(timeout=10)
        output = "".join(lines)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        stack.cleanup()
    # make re-raises the SIGINT it got with the terminal's group (-2); what counts is below.
    assert process.returncode in (0, -signal.SIGINT), output
    assert "Stopped." in output
    assert "The concert-booking stack is up" in output
    # A newcomer's first minute: no supervisor CRIT line, no setuptools licence warning.
    assert "CRIT" not in output and "license" not in output.lower(), output
    assert "terminated by SIGTERM" not in output, output  # each program ends as asked
    time.sleep(0.5)
    assert [s for s in SERVICES if listening(stack.urls[s])] == []
    left = subprocess.run(
        ["pgrep", "-f", str(tmp_path)], capture_output=True, text=True
    ).stdout.split()
    assert left == [], f"processes left behind: {left}"
    with pytest.raises(ProcessLookupError):
        os.kill(int(pids), 0)
