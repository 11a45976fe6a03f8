"""The one syntax of a company or connection id, wherever Synctrack takes one from outside.

It admits Codat's UUIDs and short readable ids, and nothing that could mean more than one id downstream: no commas
(list filters split on them), no whitespace, no NUL, nothing that needs escaping in a URL.
"""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import StringConstraints

MAX_ID_LENGTH = 128
ID_PATTERN = rf"^[A-Za-z0-9][A-Za-z0-9._-]{{0,{MAX_ID_LENGTH - 1}}}$"
_ID = re.compile(ID_PATTERN)
ID_SYNTAX = f"letters, digits, '-', '_' and '.', starting with a letter or digit, at most {MAX_ID_LENGTH} characters"

CodatId = Annotated[str, StringConstraints(pattern=ID_PATTERN)]
"""A company or connection id in a request body (pydantic checks the syntax)."""


def is_valid_id(value: object) -> bool:
    """Whether `value` is a string of the one id syntax (`fullmatch`: a trailing newline does not pass)."""
    return isinstance(value, str) and _ID.fullmatch(value) is not None
