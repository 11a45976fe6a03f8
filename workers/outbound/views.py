"""Subscription and delivery rows rendered as the API's objects (never with a secret unless asked)."""

from __future__ import annotations

import json
from datetime import datetime

from schemas.subscriptions import DeliveryDetail, DeliveryOut, SubscriptionOut, SubscriptionWithSecret
from workers.ledger.tables import Delivery, Subscription


def _previous_secret(row: Subscription, now: datetime) -> str | None:
    """The previous secret while its rotation overlap lasts."""
    expires = row.previous_secret_expires_at
    return row.previous_secret if expires is not None and expires > now else None


def signing_keys(row: Subscription, now: datetime) -> list[str]:
    """The secrets a delivery sent at `now` is signed with: the current one, and the previous one while valid."""
    previous = _previous_secret(row, now)
    return [row.secret] if previous is None else [row.secret, previous]


def subscription_out(row: Subscription, now: datetime) -> SubscriptionOut:
    expires = row.previous_secret_expires_at if _previous_secret(row, now) is not None else None
    return SubscriptionOut.model_validate({**row.model_dump(), "previous_secret_expires_at": expires})


def subscription_with_secret(row: Subscription, now: datetime) -> SubscriptionWithSecret:
    return SubscriptionWithSecret(**subscription_out(row, now).model_dump(), secret=row.secret)


def delivery_out(row: Delivery) -> DeliveryOut:
    next_attempt_at = row.next_attempt_at if row.status == "pending" else None
    return DeliveryOut.model_validate({**row.model_dump(), "next_attempt_at": next_attempt_at})


def delivery_detail(row: Delivery) -> DeliveryDetail:
    return DeliveryDetail(**delivery_out(row).model_dump(), body=json.loads(row.body))
