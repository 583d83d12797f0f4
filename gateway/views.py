"""The storefront: server-rendered pages over the same services as the JSON API."""

import uuid

from django import forms
from django.http import Http404
from django.shortcuts import redirect, render
from django.views.decorators.http import require_http_methods

from gateway import clients, services
from resilience.exceptions import ResilienceError


class BookingForm(forms.Form):
    quantity = forms.IntegerField(min_value=1, max_value=10, initial=2)
    email = forms.EmailField()
    card_token = forms.ChoiceField(
        choices=[
            ("tok_visa", "Visa ending 4242 (approved)"),
            ("tok_decline", "Card that is declined"),
        ]
    )
    # A fresh key per form: submitting twice (double click, reload) still books once.
    idempotency_key = forms.CharField(widget=forms.HiddenInput)


def unavailable(request, what: str):
    return render(request, "gateway/unavailable.html", {"what": what}, status=503)


def show_list(request):
    try:
        shows = services.shows_list()
    except ResilienceError:
        return unavailable(request, "the show list")
    return render(request, "gateway/show_list.html", {"shows": shows})


@require_http_methods(["GET", "POST"])
def show_detail(request, show_id: int):
    try:
        show = services.show_get(show_id)
    except clients.NotFound:
        raise Http404("No such show") from None
    except ResilienceError:
        return unavailable(request, "this show")
    try:
        recommendations = services.recommendations_for(show_id)
    except ResilienceError:
        recommendations = None  # only without resilience: then there is no fallback
    error = None
    if request.method == "POST":
        form = BookingForm(request.POST)
        if form.is_valid():
            payload = {
                "show_id": show_id,
                **{k: form.cleaned_data[k] for k in ("quantity", "email", "card_token")},
            }
            try:
                response = clients.orders_create(
                    idempotency_key=form.cleaned_data["idempotency_key"], payload=payload
                )
            except ResilienceError:
                error = (
                    "Booking is unavailable right now, so we cannot tell yet whether your order "
                    "went through. Send the form again: it is the same order, and it is never "
                    "charged twice."
                )
            else:
                body = response.json()
                if response.status_code in (200, 201):
                    return redirect("order-page", order_id=body["id"])
                error = body.get("message", "The booking was refused.")
    else:
        form = BookingForm(initial={"idempotency_key": uuid.uuid4().hex})
    return render(
        request,
        "gateway/show_detail.html",
        {"show": show, "recommendations": recommendations, "form": form, "error": error},
    )


def order_page(request, order_id):
    try:
        response = clients.orders_get(str(order_id))
    except ResilienceError:
        return unavailable(request, "this order")
    if response.status_code == 404:
        raise Http404("No such order")
    return render(request, "gateway/order.html", {"order": response.json()})
