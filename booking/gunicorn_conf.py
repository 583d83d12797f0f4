"""gunicorn settings shared by every service; what varies comes from the environment.

Threaded workers (gthread, with the queue stamp of resilience.gunicorn.ThreadWorker, which
admission control reads), several processes per service, so that cross-process behaviour
(breaker state, metrics, bulkheads per process) is real.
"""

import os

bind = os.environ.get("GUNICORN_BIND", "127.0.0.1:8000")
workers = int(os.environ.get("GUNICORN_WORKERS", "2"))
worker_class = "resilience.gunicorn.ThreadWorker"
threads = int(os.environ.get("GUNICORN_THREADS", "16"))
# Above the longest deadline of any call into a service: gunicorn must never kill a worker
# that is still inside its resilience budget.
timeout = int(os.environ.get("GUNICORN_TIMEOUT", "60"))
graceful_timeout = 5
keepalive = 5
# Supervisor (or the platform) controls the processes. gunicorn's control socket would sit at
# one path in $HOME for all six services, and for every stack a test starts.
control_socket_disable = True
accesslog = os.environ.get("GUNICORN_ACCESSLOG") or None
errorlog = "-"
proc_name = os.environ.get("GUNICORN_PROC_NAME", "booking")


def on_starting(server):
    # Per-process metric files of an earlier run would be summed into this one's. Not those of
    # a process still running: orders' task worker writes into orders' directory too.
    directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if directory:
        from resilience import multiprocess

        os.makedirs(directory, exist_ok=True)
        multiprocess.remove_files_of_dead_processes(directory)


def child_exit(server, worker):
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid)
