"""`SYNCTRACK_BUNDLES` read into `Settings.bundles`: bundles in the order given, or a refusal saying why."""

from __future__ import annotations

import pytest

from schemas.settings import Settings


def test_bundles_are_read_in_order_with_their_data_types(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(
        "SYNCTRACK_BUNDLES", " ar=invoices, creditNotes,payments,customers ; close=balanceSheet,profitAndLoss;"
    )
    assert Settings(_env_file=None).bundles == {
        "ar": ["invoices", "creditNotes", "payments", "customers"],
        "close": ["balanceSheet", "profitAndLoss"],
    }


def test_no_bundles_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SYNCTRACK_BUNDLES", raising=False)
    assert Settings(_env_file=None).bundles == {}


@pytest.mark.parametrize(
    ("bad", "why"),
    [
        ("ar", "'ar' is not <name>=<data type>"),
        ("ar=", "'ar=' is not <name>=<data type>"),
        ("=invoices", "'=invoices' is not <name>=<data type>"),
        ("a r=invoices", "'a r=invoices' is not <name>=<data type>"),
        ("ar=invoices,credit notes", "bundle 'ar': 'credit notes' is not a Codat data type name"),
        ("ar=invoices;ar=payments", "bundle 'ar' is named twice"),
    ],
)
def test_a_malformed_bundle_is_refused_saying_why(monkeypatch: pytest.MonkeyPatch, bad: str, why: str) -> None:
    monkeypatch.setenv("SYNCTRACK_BUNDLES", bad)
    with pytest.raises(ValueError, match=why):
        Settings(_env_file=None)
