"""What the local stack's supervisor runs, and with which environment."""

from workshop.stack import Stack


def test_the_worker_writes_its_metrics_into_orders_directory(settings, tmp_path):
    """Orders' /metrics sums the files of one directory: the worker's calls must be there."""
    settings.VAR_DIR = tmp_path
    programs = Stack().programs()
    orders, worker = programs["orders"][1], programs["orders-worker"][1]
    assert worker["PROMETHEUS_MULTIPROC_DIR"] == orders["PROMETHEUS_MULTIPROC_DIR"]
    assert worker["PROMETHEUS_MULTIPROC_DIR"] == str(tmp_path / "prometheus" / "orders")
    # The sweeper calls no policy: it has no directory to write to.
    assert "PROMETHEUS_MULTIPROC_DIR" not in programs["inventory-sweeper"][1]


def test_two_task_workers_each_beat_their_own_alive_file(settings, tmp_path):
    """With ORDERS_TASK_WORKERS=2 the stack runs orders-worker and orders-worker-2: the same
    command and metrics directory, but one alive file each, so that one worker's beats never
    hide the other's death."""
    settings.VAR_DIR = tmp_path
    settings.ORDERS_TASK_WORKERS = 2
    programs = Stack().programs()
    first, second = programs["orders-worker"], programs["orders-worker-2"]
    assert "orders-worker-3" not in programs
    assert first[0] == second[0]
    assert first[1]["ORDERS_WORKER_ALIVE_FILE"] == str(tmp_path / "orders-worker.alive")
    assert second[1]["ORDERS_WORKER_ALIVE_FILE"] == str(tmp_path / "orders-worker-2.alive")
    assert first[1]["PROMETHEUS_MULTIPROC_DIR"] == second[1]["PROMETHEUS_MULTIPROC_DIR"]


def test_one_task_worker_by_default(settings, tmp_path):
    settings.VAR_DIR = tmp_path
    assert [name for name in Stack().programs() if name.startswith("orders-worker")] == [
        "orders-worker"
    ]
