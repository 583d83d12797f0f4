"""gunicorn's threaded worker, noting when each request was queued for a thread.

    gunicorn -k resilience.gunicorn.ThreadWorker --threads 16 ...

gthread's main thread accepts connections and hands each request to a pool of threads; the
requests wait in the pool's queue, outside Django, where no middleware can see how long. This
worker notes when each one is queued, and when a thread picks it up, hands the seconds it
waited to Django in ``environ["resilience.queue_wait"]``, so that
``resilience.admission.AdmissionMiddleware`` can refuse, at once, a request that waited longer
than its clients will (docs/resilience.md, "Admission control"). Only the wait for a thread
counts: not the time the client takes to send its request (a slow or preconnecting client is
not the server's queue). Everything else is gthread's.
"""

import threading
import time

from gunicorn.workers.gthread import ThreadWorker as _GThreadWorker

# resilience.admission.QUEUE_WAIT. Not imported from there: this module is loaded by gunicorn's
# master process, before it forks the workers, and must not set up Django or the metrics in it.
QUEUE_WAIT = "resilience.queue_wait"

_local = threading.local()


class ThreadWorker(_GThreadWorker):
    def enqueue_req(self, conn) -> None:
        conn.resilience_queued_at = time.monotonic()
        super().enqueue_req(conn)

    def handle(self, conn):
        queued_at = getattr(conn, "resilience_queued_at", None)
        _local.queue_wait = None if queued_at is None else time.monotonic() - queued_at
        try:
            return super().handle(conn)
        finally:
            _local.queue_wait = None

    def load_wsgi(self) -> None:
        super().load_wsgi()
        app = self.wsgi

        def stamped(environ, start_response):
            waited = getattr(_local, "queue_wait", None)
            if waited is not None:
                environ[QUEUE_WAIT] = waited
                # Once: the streams of one HTTP/2 connection are served in one pickup.
                _local.queue_wait = None
            return app(environ, start_response)

        self.wsgi = stamped
