"""Charges with Stripe-style idempotency keys, their refunds, and cancelling a key for good.

The first request under a key inserts an ``IdempotencyRecord`` (unique key), does the work,
and stores its answer on the record. A repeat with the same body gets the stored answer; a
repeat with a different body is a 422; a repeat while the first is still working is a 409.
The unique constraints on the record and on ``Charge.idempotency_key`` make the database the
judge, so concurrent workers cannot charge twice.

A charge and its answer commit together: a process killed after the commit leaves a
completed record (a repeat replays it), one killed before leaves an in-flight record and no
charge, which a later request takes over once ``PAYMENTS_IN_FLIGHT_LEASE`` has passed.

``charge_cancel`` answers, for good, whether a key ever charged: it completes a key that has
no charge with a "cancelled" answer, which every later charge request under that key gets.
That is how a caller that lost track of a charge (its request timed out, its process died)
learns the truth and makes sure a late request cannot charge after it gave up.
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

from payments.exceptions import (
    ChargeNotFound,
    ChargeNotRefundable,
    IdempotencyKeyReused,
    RequestInFlight,
)
from payments.models import Charge, IdempotencyRecord, Refund

DECLINED_TOKEN = "tok_decline"
# The fingerprint of a key completed by charge_cancel: no charge body ever has it.
CANCELLED = "cancelled"
CANCELLED_ANSWER = (
    410,
    {"code": "charge_cancelled", "message": "This charge was cancelled: nothing was charged."},
)


@dataclass(frozen=True)
class ChargeResult:
    status: int
    body: dict
    replayed: bool


def fingerprint(payload: dict) -> str:
    canonical = json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


def _in_flight_lease() -> timedelta:
    """A record left in flight longer than this was abandoned by a crashed process."""
    return timedelta(seconds=settings.PAYMENTS_IN_FLIGHT_LEASE)


def _take_over(record: IdempotencyRecord) -> bool:
    """Whether this request takes over a record abandoned in flight (a conditional update)."""
    stale = timezone.now() - _in_flight_lease()
    return bool(
        IdempotencyRecord.objects.filter(
            pk=record.pk, state=IdempotencyRecord.State.IN_FLIGHT, updated_at__lt=stale
        ).update(updated_at=timezone.now())
    )


def _claim(key: str, digest: str) -> IdempotencyRecord | ChargeResult:
    """The record to work under, or the stored answer of an earlier request."""
    try:
        with transaction.atomic():
            return IdempotencyRecord.objects.create(key=key, fingerprint=digest)
    except IntegrityError:
        pass
    record = IdempotencyRecord.objects.get(key=key)
    if record.fingerprint == CANCELLED:
        return ChargeResult(*CANCELLED_ANSWER, replayed=True)
    if record.fingerprint != digest:
        raise IdempotencyKeyReused()
    if record.state == IdempotencyRecord.State.COMPLETED:
        return ChargeResult(record.response_status, record.response_body, replayed=True)
    if _take_over(record):
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
            # The record is completed in the same transaction as the charge, and only if it is
            # still ours: a cancel that took it over meanwhile wins, and nothing is charged.
            completed = IdempotencyRecord.objects.filter(
                pk=record.pk, state=IdempotencyRecord.State.IN_FLIGHT, fingerprint=digest
            ).update(state=IdempotencyRecord.State.COMPLETED, updated_at=timezone.now())
            if not completed:
                transaction.set_rollback(True)
                record.refresh_from_db()
                if record.fingerprint == CANCELLED:
                    return ChargeResult(*CANCELLED_ANSWER, replayed=True)
                return ChargeResult(record.response_status, record.response_body, replayed=True)
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
            IdempotencyRecord.objects.filter(pk=record.pk).update(
                response_status=status, response_body=body
            )
    except BaseException:
        # Nothing was charged (the charge and the record commit together): free the key.
        IdempotencyRecord.objects.filter(
            pk=record.pk, state=IdempotencyRecord.State.IN_FLIGHT
        ).delete()
        raise
    return ChargeResult(status, body, replayed=False)


@dataclass(frozen=True)
class CancelResult:
    state: str  # "cancelled", "charged" or "declined"
    charge: dict | None = None


def charge_cancel(*, idempotency_key: str) -> CancelResult:
    """Whether the charge under ``idempotency_key`` happened; if it did not, it never will.

    ``RequestInFlight`` while a charge under the key is still being processed (ask again).
    """
    try:
        with transaction.atomic():
            IdempotencyRecord.objects.create(
                key=idempotency_key,
                fingerprint=CANCELLED,
                state=IdempotencyRecord.State.COMPLETED,
                response_status=CANCELLED_ANSWER[0],
                response_body=CANCELLED_ANSWER[1],
            )
            return CancelResult("cancelled")
    except IntegrityError:
        pass
    record = IdempotencyRecord.objects.get(key=idempotency_key)
    if record.fingerprint == CANCELLED:
        return CancelResult("cancelled")
    if record.state == IdempotencyRecord.State.IN_FLIGHT:
        stale = timezone.now() - _in_flight_lease()
        # An abandoned request charged nothing (its charge would have completed the record).
        if IdempotencyRecord.objects.filter(
            pk=record.pk, state=IdempotencyRecord.State.IN_FLIGHT, updated_at__lt=stale
        ).update(
            fingerprint=CANCELLED,
            state=IdempotencyRecord.State.COMPLETED,
            response_status=CANCELLED_ANSWER[0],
            response_body=CANCELLED_ANSWER[1],
            updated_at=timezone.now(),
        ):
            return CancelResult("cancelled")
        raise RequestInFlight()
    charge = Charge.objects.filter(idempotency_key=idempotency_key).first()
    if charge is None:  # a completed record without a charge: an error answer was stored
        return CancelResult("cancelled")
    state = "charged" if charge.status == Charge.Status.SUCCEEDED else "declined"
    return CancelResult(state, charge_as_dict(charge))


def refund_create(*, idempotency_key: str, charge_id: int, reason: str = "") -> tuple[Refund, bool]:
    """Give a succeeded charge back in full: ``(refund, created)``; a repeat returns the first."""
    existing = Refund.objects.filter(idempotency_key=idempotency_key).first()
    if existing is not None:
        if existing.charge_id != charge_id:
            raise IdempotencyKeyReused()
        return existing, False
    charge = Charge.objects.filter(pk=charge_id).first()
    if charge is None:
        raise ChargeNotFound()
    if charge.status != Charge.Status.SUCCEEDED:
        raise ChargeNotRefundable()
    try:
        with transaction.atomic():
            refund = Refund.objects.create(
                charge=charge, idempotency_key=idempotency_key, amount=charge.amount, reason=reason
            )
    except IntegrityError:
        # A racing request under this key, or an earlier refund of the charge under another
        # key: either way the charge is given back once.
        refund = Refund.objects.filter(idempotency_key=idempotency_key).first()
        return refund or Refund.objects.get(charge=charge), False
    return refund, True


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


def refund_as_dict(refund: Refund) -> dict:
    return {
        "id": refund.pk,
        "charge_id": refund.charge_id,
        "order_id": refund.charge.order_id,
        "amount": str(refund.amount),
        "reason": refund.reason,
        "created_at": refund.created_at.isoformat(),
    }
