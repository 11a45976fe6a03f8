"""Both envelope generations normalise into one `Event`."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from schemas.events import ANY_DATA_TYPE, BodySummary, InvalidEnvelope, envelope_summary, parse_event, summarise_body
from tests.support.builders import fixture

RECEIVED = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)


def parse(body: dict, message_id: str = "msg_1"):  # type: ignore[no-untyped-def]
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
        envelope_summary(body)


def test_a_known_event_with_a_broken_payload_is_rejected_by_the_full_parse() -> None:
    body = {"id": "x", "eventType": "read.completed", "generatedDate": "2026-11-20T09:00:00Z", "payload": {}}
    envelope_summary(body)  # the receiver accepts it: it is an envelope
    with pytest.raises(InvalidEnvelope, match="dataTypes"):
        parse(body)


def test_a_body_summary_names_type_envelope_company_and_connection_of_both_generations() -> None:
    read = fixture("read.completed")
    legacy = fixture("legacy.DataConnectionStatusChanged")
    assert summarise_body(json.dumps(read)) == BodySummary(
        "read.completed",
        read["id"],
        read["payload"]["referenceCompany"]["id"],
        read["payload"]["dataTypes"][0]["connectionId"],
    )
    assert summarise_body(json.dumps(legacy)) == BodySummary(
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
    assert summarise_body(json.dumps(body)) == BodySummary("connection.connected", "x", None, None)
