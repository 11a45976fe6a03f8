"""The start-up schema check (`workers/runtime/db.py`) reads what alembic wrote without importing alembic."""

from __future__ import annotations

from pathlib import Path

import pytest
from alembic.script import ScriptDirectory

from workers.runtime.db import (
    SchemaOutOfDate,
    alembic_config,
    current_revision,
    head_revision,
    make_engine,
    require_current_schema,
    upgrade,
)


def test_the_head_read_from_the_migration_files_is_alembics_head(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    assert head_revision() == ScriptDirectory.from_config(alembic_config(url)).get_current_head()


def test_a_database_never_migrated_is_at_no_revision_and_is_refused(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'ledger.db'}")
    assert current_revision(engine) is None
    with pytest.raises(SchemaOutOfDate, match="at nothing"):
        require_current_schema(engine)


def test_a_database_upgraded_to_head_passes_the_check(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    upgrade(url)
    engine = make_engine(url)
    assert current_revision(engine) == head_revision()
    require_current_schema(engine)


def test_a_database_one_revision_behind_is_refused(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    script = ScriptDirectory.from_config(alembic_config(url))
    head = script.get_revision(str(script.get_current_head()))
    assert head is not None and isinstance(head.down_revision, str)
    upgrade(url, head.down_revision)
    engine = make_engine(url)
    assert current_revision(engine) == head.down_revision
    with pytest.raises(SchemaOutOfDate, match=f"at {head.down_revision}, this code needs {head.revision}"):
        require_current_schema(engine)
