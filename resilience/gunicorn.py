"""gunicorn's threaded worker, noting when each request was queued for a thread.

    gunicorn -k resilience.gunicorn.ThreadWorker --threads 16 ...

gthread's main thread accepts connections and hands each request to a pool of threads; the
requests wait in the pool's queue, outside Django, where no middleware can see how long. This
worker stamps each one as it is queued (``time.monotonic()``) and hands the stamp to Django in
``environ["resilience.queued_at"]``, so that ``resilience.admission.AdmissionMiddleware`` can
refuse, at once, a request that waited longer than its clients will (docs/resilience.md,
"Admission control"). Everything else is gthread's.
"""

import threading
import time

from gunicorn.workers.gthread import ThreadWorker as _GThreadWorker

# resilience.admission.QUEUED_AT. Not imported from there: this module is loaded by gunicorn's
# master process, before it forks the workers, and must not set up Django or the metrics in it.
QUEUED_AT = "resilience.queued_at"

_local = threading.local()


class ThreadWorker(_GThreadWorker):
    def enqueue_req(self, conn) -> None:
        conn.resilience_queued_at = time.monotonic()
        super().enqueue_req(conn)

    def handle(self, conn):
        _local.queued_at = getattr(conn, "resilience_queued_at", None)
        try:
            return super().handle(conn)
        finally:
            _local.queued_at = None

    def load_wsgi(self) -> None:
        super().load_wsgi()
        app = self.wsgi

        def stamped(environ, start_response):
            queued_at = getattr(_local, "queued_at", None)
            if queued_at is not None:
                environ[QUEUED_AT] = queued_at
            return app(environ, start_response)

        self.wsgi = stamped
