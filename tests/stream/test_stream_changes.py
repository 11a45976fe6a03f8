"""What the fold announces is what it stored: a stream event carries the row the JSON API will show."""

from __future__ import annotations

import json

from schemas.events import parse_event
from tests.support.builders import COMPANY, CONNECTION, at, connection_event, read_completed
from workers.ledger.fold import ConnectionSlice, fold
from workers.ledger.rows import ConnectionRow


def test_a_finished_sync_is_announced_exactly_as_it_is_stored() -> None:
    state = ConnectionSlice(connection=ConnectionRow(id=CONNECTION, company_id=COMPANY))
    opened = parse_event(json.dumps(connection_event(minutes=0)), "msg_open", at(0))
    fold(state, opened)
    finished = parse_event(json.dumps(read_completed(minutes=10)), "msg_done", at(10))

    changes = fold(state, finished)

    results = [c.sync for c in changes if c.sync is not None and c.sync.id in state.syncs]
    assert len(results) == 2
    for announced in results:
        assert announced == state.syncs[announced.id]
        assert announced.records_modified is True
