"""The gateway: public API, recommendations fallback chain, and the storefront pages."""

from recommendations.services import cobooking_add
from tests.ports import closed_port_url


def test_shows_are_listed_through_inventory(client, stack, make_show):
    show = make_show(seats_total=7)
    shows = client.get("/gateway/api/shows/").json()
    assert [(s["id"], s["seats_available"]) for s in shows] == [(show.pk, 7)]
    assert client.get(f"/gateway/api/shows/{show.pk}/").json()["title"] == show.title
    assert client.get("/gateway/api/shows/999999/").json()["code"] == "show_not_found"


def test_recommendations_fall_back_from_live_to_cache_to_popular(
    client, stack, settings, make_show
):
    seen, other, unseen, popular = (
        make_show(title=t) for t in ("Seen", "Other", "Unseen", "Popular")
    )
    popular.seats_sold = 5
    popular.save()
    cobooking_add(show_id=seen.pk, other_show_id=other.pk, count=3)
    live = client.get(f"/gateway/api/shows/{seen.pk}/recommendations/").json()
    assert live == {
        "source": "live",
        "shows": [{"id": other.pk, "title": "Other", "artist": "The Testers"}],
    }

    settings.RESILIENCE_SERVICES = {
        **settings.RESILIENCE_SERVICES,
        "recommendations": closed_port_url(),
    }
    cached = client.get(f"/gateway/api/shows/{seen.pk}/recommendations/").json()
    assert cached == {"source": "cache", "shows": live["shows"]}
    fallback = client.get(f"/gateway/api/shows/{unseen.pk}/recommendations/").json()
    assert fallback["source"] == "popular"
    assert fallback["shows"][0]["title"] == "Popular"
    assert unseen.pk not in [s["id"] for s in fallback["shows"]]


def test_orders_pass_through_the_gateway(client, stack, make_show):
    show = make_show()
    body = {"show_id": show.pk, "quantity": 1, "email": "a@example.com", "card_token": "tok_visa"}
    created = client.post(
        "/gateway/api/orders/", body, content_type="application/json", HTTP_IDEMPOTENCY_KEY="g1"
    )
    assert (created.status_code, created.json()["status"]) == (201, "confirmed")
    fetched = client.get(f"/gateway/api/orders/{created.json()['id']}/").json()
    assert fetched["id"] == created.json()["id"]
    missing = client.post("/gateway/api/orders/", body, content_type="application/json")
    assert (missing.status_code, missing.json()["code"]) == (400, "idempotency_key_missing")


def test_orders_unavailable_is_a_503_that_says_only_what_is_known(
    client, stack, settings, make_show
):
    """Not "nothing was charged": the gateway cannot know whether orders placed it."""
    show = make_show()
    settings.RESILIENCE_SERVICES = {**settings.RESILIENCE_SERVICES, "orders": closed_port_url()}
    body = {"show_id": show.pk, "quantity": 1, "email": "a@example.com", "card_token": "tok_visa"}
    response = client.post(
        "/gateway/api/orders/", body, content_type="application/json", HTTP_IDEMPOTENCY_KEY="g"
    )
    answer = response.json()
    assert (response.status_code, answer["code"]) == (503, "orders_unavailable")
    assert "not known" in answer["message"] and "same Idempotency-Key" in answer["message"]
    assert "Nothing was charged" not in answer["message"]
    assert response["Retry-After"] == "2"


def test_the_storefront_renders_and_books(client, stack, settings, make_show):
    show = make_show(title="Winter Lights")
    listing = client.get("/gateway/").content.decode()
    assert "Winter Lights" in listing
    assert "Sunday 14 February 2027" in listing and "2027-02-14" not in listing
    page = client.get(f"/gateway/shows/{show.pk}/")
    assert page.status_code == 200
    assert "Book now" in page.content.decode()
    assert "Sunday 14 February 2027, 19:30" in page.content.decode()
    key = page.context["form"].initial["idempotency_key"]
    form = {
        "quantity": 2,
        "email": "fan@example.com",
        "card_token": "tok_visa",
        "idempotency_key": key,
    }
    booked = client.post(f"/gateway/shows/{show.pk}/", form)
    assert booked.status_code == 302
    again = client.post(f"/gateway/shows/{show.pk}/", form)  # a double submit books once
    assert again["Location"] == booked["Location"]
    order_page = client.get(booked["Location"])
    assert "confirmed" in order_page.content.decode()
    settings.RESILIENCE_SERVICES = {
        **settings.RESILIENCE_SERVICES,
        "recommendations": closed_port_url(),
    }
    degraded = client.get(f"/gateway/shows/{show.pk}/").content.decode()
    assert "popular" in degraded


def test_unknown_urls_answer_json_404(client, db):
    response = client.get("/no/such/thing/")
    assert (response.status_code, response.json()["code"]) == (404, "not_found")


def test_the_order_page_says_what_happened_to_the_money_in_every_state():
    from django.template.loader import render_to_string

    def page(status, refunded=False, needs_attention=False):
        order = {
            "id": "o1",
            "status": status,
            "refunded": refunded,
            "needs_attention": needs_attention,
            "quantity": 1,
            "email": "fan@example.com",
            "failure_code": "seats_unavailable",
        }
        return render_to_string("gateway/order.html", {"order": order})

    assert "Nothing was charged." in page("failed")
    refunded = page("failed", refunded=True)
    assert "refunded in full" in refunded and "Nothing was charged" not in refunded
    assert "being refunded" in page("refunding")
    assert "charged" in page("paid") and "being booked" in page("paid")
    assert "Nothing has been charged yet" in page("pending")
    # parked for staff: said plainly, with what happened to the money
    paid = page("paid", needs_attention=True)
    assert "staff is sorting this order out" in paid and "being booked" not in paid
    assert "charged; you will either get your seats or a full refund" in paid
    assert "Nothing has been charged." in page("pending", needs_attention=True)
    assert "never a second charge" in page("payment_pending", needs_attention=True)
    assert "staff" in page("failed", refunded=True, needs_attention=True)
