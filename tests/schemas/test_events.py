"""Both envelope generations normalise into one `Event`."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest

from schemas.events import (
    ANY_DATA_TYPE,
    Envelope,
    Event,
    InvalidEnvelope,
    LinkFailure,
    parse_event,
    read_envelope,
    summarise_body,
)
from schemas.normalise import is_active_error
from tests.support.builders import connection_error, connection_event, fixture, read_completed

RECEIVED = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)


def parse(body: dict[str, Any], message_id: str = "msg_1") -> Event:
    return parse_event(json.dumps(body), message_id, RECEIVED)


def test_connection_connected_carries_status_details_metadata_and_an_expected_read() -> None:
    event = parse(fixture("connection.connected"))
    assert event.event_type == "connection.connected"
    assert event.generated_at == datetime(2026, 11, 20, 9, 14, 3, tzinfo=UTC)
    assert event.company_id == "8a210b68-6988-11ed-a1eb-0242ac120002"
    assert event.company_name == "Toft Stores"
    (conn,) = event.connections
    assert conn.status == "Linked"
    assert conn.platform_name == "Lloyds Bank"
    assert conn.platform_key == "dfxm"
    assert conn.metadata == {"currency": "GBP", "accountName": "Business Current Account"}
    (expected,) = event.syncs
    assert expected.data_type == ANY_DATA_TYPE
    assert expected.status == "Queued"
    assert expected.requested_at == event.generated_at


def test_read_completed_gives_one_result_per_data_type_with_issues() -> None:
    event = parse(fixture("read.completed"))
    assert [(s.data_type, s.status) for s in event.syncs] == [
        ("banking-accounts", "Complete"),
        ("banking-transactions", "Complete"),
        ("banking-accountBalances", "FetchError"),
    ]
    assert event.syncs[2].issues == ({"type": "FetchError", "message": "The bank's API returned an error."},)
    assert event.syncs[1].records_modified is True
    assert len({s.key for s in event.syncs}) == 3


def test_legacy_status_change_uses_receipt_time_and_the_alert_connection() -> None:
    event = parse(fixture("legacy.DataConnectionStatusChanged"))
    assert event.generated_at == RECEIVED
    (conn,) = event.connections
    assert (conn.id, conn.status, conn.platform_key) == ("2e2eb431-c0fa-4dc9-93fa-d29781c12bcd", "Linked", "gbol")
    assert event.syncs[0].data_type == ANY_DATA_TYPE


def test_legacy_sync_completed_and_error_are_keyed_by_dataset_id() -> None:
    done = parse(fixture("legacy.DataSyncCompleted"))
    failed = parse(fixture("legacy.DataSyncStatusChangedToError"))
    assert (done.syncs[0].key, done.syncs[0].status) == ("7d9e2f1a-5b3c-4a6d-9e8f-0a1b2c3d4e5f", "Complete")
    assert (failed.syncs[0].data_type, failed.syncs[0].status) == ("bills", "ProcessingError")


def test_unknown_event_types_parse_but_are_marked_unknown() -> None:
    event = parse({"id": "x", "eventType": "invoices.write.successful", "generatedDate": "2026-11-20T09:00:00Z"})
    assert event.known is False
    assert event.syncs == () and event.connections == ()


@pytest.mark.parametrize(
    "body, reason",
    [
        ([], "JSON object"),
        ({"eventType": "read.completed", "generatedDate": "2026-11-20T09:00:00Z"}, "string id"),
        ({"id": "x", "eventType": "read.completed", "generatedDate": "yesterday"}, "ISO 8601"),
        ({"id": "x", "eventType": "", "generatedDate": "2026-11-20T09:00:00Z"}, "non-empty"),
        ({"hello": "world"}, "Codat envelope"),
        ({"RuleType": "Data sync completed"}, "AlertId"),
    ],
)
def test_envelope_shape_errors_say_what_is_wrong(body: object, reason: str) -> None:
    with pytest.raises(InvalidEnvelope, match=reason):
        read_envelope(body)


def test_a_known_event_with_a_broken_payload_is_rejected_by_the_full_parse() -> None:
    body = {"id": "x", "eventType": "read.completed", "generatedDate": "2026-11-20T09:00:00Z", "payload": {}}
    read_envelope(body)  # the receiver accepts it: it is an envelope
    with pytest.raises(InvalidEnvelope, match="dataTypes"):
        parse(body)


def test_a_body_summary_names_type_envelope_company_and_connection_of_both_generations() -> None:
    read = fixture("read.completed")
    legacy = fixture("legacy.DataConnectionStatusChanged")
    assert summarise_body(json.dumps(read)) == Envelope(
        "read.completed",
        read["id"],
        read["payload"]["referenceCompany"]["id"],
        read["payload"]["dataTypes"][0]["connectionId"],
        datetime.fromisoformat(read["generatedDate"].replace("Z", "+00:00")),
    )
    assert summarise_body(json.dumps(legacy)) == Envelope(
        legacy["RuleType"], legacy["AlertId"], legacy["CompanyId"], legacy["DataConnectionId"]
    )


@pytest.mark.parametrize(
    "body",
    ["not json", "[]", '{"hello": "world"}', '{"id": "x", "eventType": "a", "generatedDate": "yesterday"}'],
)
def test_a_body_that_is_no_envelope_has_no_summary(body: str) -> None:
    assert summarise_body(body) is None


def test_a_summary_skips_ids_of_the_wrong_shape_instead_of_failing() -> None:
    body = {
        "id": "x",
        "eventType": "connection.connected",
        "generatedDate": "2026-11-20T09:00:00Z",
        "payload": {"referenceCompany": "not an object", "connection": {"id": 7}},
    }
    generated = datetime(2026, 11, 20, 9, 0, tzinfo=UTC)
    assert summarise_body(json.dumps(body)) == Envelope("connection.connected", "x", None, None, generated)


# --- company events and every documented payload -------------------------------------------------

LARKSPUR = "5b1d5f0e-2c4a-4e8b-9a77-3f0c2d6e1a90"

PROCESSED = [
    "company.created",
    "company.deleted",
    "connection.failed",
    "read.completed.with-validation-warnings",
    "read.completed.odd-shapes",
    "legacy.NewCompanySynchronised",
    "legacy.NewCompanySynchronized",
]
IGNORED = {
    "legacy.SyncConnectionDeleted": "no data connection",
    "legacy.PushOperationStatusChanged": "write",
    "legacy.RateLimitReached": "rate-limit",
    "legacy.RateLimitReset": "rate-limit",
    "legacy.SyncCompleted": "Sync for Expenses",
    "legacy.SyncFailed": "Sync for Expenses",
    "client.rateLimit.reached": "rate-limit",
    "company.product.enabled": "products",
    "invoices.write.successful": "write",
}


def test_a_company_event_reads_the_company_from_the_payload_itself() -> None:
    event = parse(fixture("company.created"))
    assert (event.company_id, event.company_name) == (LARKSPUR, "Larkspur Joinery")
    assert event.company_description == "Asked for a working-capital line."
    assert event.company_tags == {"region": "uk", "crm": "acc-20931"}
    assert event.known and not event.company_deleted and event.connections == ()


def test_company_deleted_says_the_company_is_deleted() -> None:
    event = parse(fixture("company.deleted"))
    assert (event.company_id, event.company_deleted, event.known) == (LARKSPUR, True, True)


def test_a_company_event_without_a_company_id_is_not_a_codat_payload() -> None:
    body = {
        "id": "x",
        "eventType": "company.created",
        "generatedDate": "2026-11-20T09:00:00Z",
        "payload": {"name": "A"},
    }
    with pytest.raises(InvalidEnvelope, match="payload.id"):
        parse(body)


def test_connection_errors_keep_codats_string_status_codes_and_resolution() -> None:
    (conn,) = parse(fixture("connection.failed")).connections
    assert conn.errors is not None
    assert [(e["statusCode"], e["status"]) for e in conn.errors] == [("403", "Active"), ("500", "Resolved")]
    assert conn.errors[1]["resolvedOnUtc"] == "2026-11-20T09:20:00Z"
    assert conn.metadata is None and conn.status == "PendingAuth"


def test_connection_failed_keeps_why_linking_failed_from_its_first_active_error() -> None:
    (conn,) = parse(fixture("connection.failed")).connections
    assert conn.link_failure == LinkFailure("403", "User cancelled linking", "User cancelled")
    assert parse(fixture("connection.connected")).connections[0].link_failure is None


def test_a_link_failure_without_an_active_error_takes_the_first_and_without_errors_is_still_a_failure() -> None:
    resolved = {**connection_error("500", "Bank unavailable", status="Resolved", resolved_minutes=1), "statusCode": 500}
    (conn,) = parse(connection_event("connection.failed", errors=[resolved])).connections
    assert conn.link_failure == LinkFailure("500", "Forbidden", "Bank unavailable")  # a numeric code becomes text
    (bare,) = parse(connection_event("connection.failed")).connections
    assert bare.link_failure == LinkFailure(None, None, None)


def test_an_error_is_current_while_codat_marks_it_active_or_nothing_and_gives_no_resolution_time() -> None:
    assert is_active_error(connection_error(status="Active"))
    assert is_active_error(connection_error(status=None))
    assert not is_active_error(connection_error(status=None, resolved_minutes=5))
    assert not is_active_error(connection_error(status="Resolved", resolved_minutes=5))
    assert is_active_error({"errorMessage": "a bare string from an older payload"})


def test_only_read_completed_initial_says_a_first_read_finished() -> None:
    assert parse(read_completed(initial=True)).initial_read
    assert not parse(read_completed()).initial_read
    legacy = parse(fixture("legacy.NewCompanySynchronised"))  # a company-level alert: it names no connection
    assert not legacy.initial_read and legacy.connection_ids == []


def test_validation_warnings_keep_type_message_and_links() -> None:
    (result,) = parse(fixture("read.completed.with-validation-warnings")).syncs
    assert result.issues is not None
    assert result.issues[0]["type"] == "warning.validation"
    assert set(result.issues[0]["links"]) == {"logs", "portal", "readMore"}


def test_issues_that_are_strings_become_objects_and_odd_flags_are_read_once() -> None:
    bills, payments = parse(fixture("read.completed.odd-shapes")).syncs
    assert bills.issues == ({"message": "The platform timed out"}, {"type": "error.fetch", "message": "HTTP 504"})
    assert payments.issues == ({"message": "one stray sentence"},)
    assert (bills.records_modified, payments.records_modified) == (True, False)


@pytest.mark.parametrize("name", PROCESSED)
def test_documented_payloads_that_change_the_ledger_are_known(name: str) -> None:
    event = parse(fixture(name))
    assert event.known and event.reason is None


@pytest.mark.parametrize("name, why", sorted(IGNORED.items()))
def test_documented_payloads_that_change_nothing_say_why(name: str, why: str) -> None:
    event = parse(fixture(name))
    assert event.known is False
    assert event.reason is not None and why in event.reason


def test_a_legacy_sync_connection_deleted_naming_a_connection_still_deletes_it() -> None:
    body = fixture("legacy.SyncConnectionDeleted") | {"DataConnectionId": "conn-1"}
    (conn,) = parse(body).connections
    assert (conn.id, conn.deleted) == ("conn-1", True)


def test_the_envelope_reads_company_events_and_odd_payloads_without_raising() -> None:
    def ids(body: dict[str, Any]) -> tuple[str | None, str | None]:
        envelope = read_envelope(body)
        return envelope.company_id, envelope.connection_id

    assert ids(fixture("company.deleted")) == (LARKSPUR, None)
    assert ids(fixture("legacy.RateLimitReached")) == (None, None)
    odd = {"id": "x", "eventType": "read.completed", "generatedDate": "2026-11-20T09:00:00Z", "payload": {}}
    odd["payload"] = {"referenceCompany": "not an object", "connection": 7, "dataTypes": ["x"]}
    assert ids(odd) == (None, None)
