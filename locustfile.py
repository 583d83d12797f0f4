"""The booking journey for locust: browse the shows, open one with its recommendations, book.

    make up                                   # the stack, in another terminal
    .venv/bin/locust --host http://127.0.0.1:8000          # then open http://localhost:8089

Break something while it runs (docs/scenarios.md) and watch the charts. Headless, bounded:

    .venv/bin/locust --host http://127.0.0.1:8000 --headless -u 20 -r 5 -t 60s

The scenario runner (``manage.py scenario run NAME``) uses its own bounded driver instead, so
that its numbers are comparable run to run; this file is for open-ended workshop load.
"""

import random
import uuid

from locust import HttpUser, between, task


class Browser(HttpUser):
    """Looks around: the show list, a show, its recommendations. Most users."""

    weight = 4
    wait_time = between(0.5, 2)

    @task
    def browse(self):
        with self.client.get("/api/shows/", name="/api/shows/", catch_response=True) as answer:
            shows = answer.json() if answer.ok else []
        if not shows:
            return
        show = random.choice(shows)["id"]
        self.client.get(f"/api/shows/{show}/", name="/api/shows/{id}/")
        with self.client.get(
            f"/api/shows/{show}/recommendations/",
            name="/api/shows/{id}/recommendations/",
            catch_response=True,
        ) as answer:
            # Answered from the fallback chain is a success the user sees; say which in stats.
            if answer.ok and answer.json().get("source") not in ("live", "cache", "popular"):
                answer.failure(f"unknown source {answer.json().get('source')!r}")


class Buyer(HttpUser):
    """Books one seat of a show; "sold out" (failed: seats_unavailable) is a correct answer."""

    weight = 1
    wait_time = between(1, 3)

    @task
    def book(self):
        show = random.randint(1, 8)
        with self.client.post(
            "/api/orders/",
            name="/api/orders/",
            json={
                "show_id": show,
                "quantity": 1,
                "email": f"fan{random.randint(1, 10_000)}@example.com",
                "card_token": "tok_visa",
            },
            headers={"Idempotency-Key": uuid.uuid4().hex},
            catch_response=True,
        ) as answer:
            if answer.status_code == 201:
                order = answer.json()
                sold_out = order.get("failure_code") == "seats_unavailable"
                if order.get("status") not in ("confirmed", "payment_pending") and not sold_out:
                    answer.failure(f"order {order.get('status')}: {order.get('failure_code')}")
