"""Charges with Stripe-style idempotency keys.

The first request under a key inserts an ``IdempotencyRecord`` (unique key), does the work,
and stores its answer on the record. A repeat with the same body gets the stored answer; a
repeat with a different body is a 422; a repeat while the first is still working is a 409.
The unique constraints on the record and on ``Charge.idempotency_key`` make the database the
judge, so concurrent workers cannot charge twice.
"""

import hashlib
import json
import random
import time
from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from payments.exceptions import IdempotencyKeyReused, RequestInFlight
from payments.models import Charge, IdempotencyRecord

DECLINED_TOKEN = "tok_decline"
# A record left in flight longer than this was abandoned by a crashed worker: take it over.
IN_FLIGHT_LEASE = timedelta(seconds=120)


@dataclass(frozen=True)
class ChargeResult:
    status: int
    body: dict
    replayed: bool


def fingerprint(payload: dict) -> str:
    canonical = json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


def _claim(key: str, digest: str) -> IdempotencyRecord | ChargeResult:
    """The record to work under, or the stored answer of an earlier request."""
    try:
        with transaction.atomic():
            return IdempotencyRecord.objects.create(key=key, fingerprint=digest)
    except IntegrityError:
        pass
    record = IdempotencyRecord.objects.get(key=key)
    if record.fingerprint != digest:
        raise IdempotencyKeyReused()
    if record.state == IdempotencyRecord.State.COMPLETED:
        return ChargeResult(record.response_status, record.response_body, replayed=True)
    stale = timezone.now() - IN_FLIGHT_LEASE
    if IdempotencyRecord.objects.filter(
        pk=record.pk, state=IdempotencyRecord.State.IN_FLIGHT, updated_at__lt=stale
    ).update(updated_at=timezone.now()):
        return record
    raise RequestInFlight()


def _process(*, amount: Decimal, card_token: str) -> None:
    """The card network's round trip."""
    low, high = settings.PAYMENTS_LATENCY_MS
    if high > 0:
        time.sleep(random.uniform(low, high) / 1000)


def charge_create(
    *, idempotency_key: str, order_id: str, amount: Decimal, currency: str, card_token: str
) -> ChargeResult:
    digest = fingerprint(
        {
            "order_id": order_id,
            "amount": str(amount),
            "currency": currency,
            "card_token": card_token,
        }
    )
    claimed = _claim(idempotency_key, digest)
    if isinstance(claimed, ChargeResult):
        return claimed
    record = claimed
    try:
        _process(amount=amount, card_token=card_token)
        declined = card_token == DECLINED_TOKEN
        with transaction.atomic():
            charge, _ = Charge.objects.get_or_create(
                idempotency_key=idempotency_key,
                defaults={
                    "order_id": order_id,
                    "amount": amount,
                    "currency": currency,
                    "card_last4": card_token[-4:],
                    "status": Charge.Status.DECLINED if declined else Charge.Status.SUCCEEDED,
                },
            )
            if charge.status == Charge.Status.DECLINED:
                status, body = (
                    402,
                    {
                        "code": "card_declined",
                        "message": "The card was declined.",
                        "charge": charge_as_dict(charge),
                    },
                )
            else:
                status, body = 201, charge_as_dict(charge)
            record.state = IdempotencyRecord.State.COMPLETED
            record.response_status, record.response_body = status, body
            record.save(update_fields=["state", "response_status", "response_body", "updated_at"])
    except BaseException:
        # Nothing was charged (the charge and the record commit together): free the key.
        IdempotencyRecord.objects.filter(
            pk=record.pk, state=IdempotencyRecord.State.IN_FLIGHT
        ).delete()
        raise
    return ChargeResult(status, body, replayed=False)


def charge_as_dict(charge: Charge) -> dict:
    return {
        "id": charge.pk,
        "order_id": charge.order_id,
        "amount": str(charge.amount),
        "currency": charge.currency,
        "card_last4": charge.card_last4,
        "status": charge.status,
        "created_at": charge.created_at.isoformat(),
    }
