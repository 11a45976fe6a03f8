"""Parameters a handler can trust, checked by `AuthMiddleware` before the tenant checks read the database.

A control character in a query parameter is 400 `invalid_parameter` (PostgreSQL refuses a NUL outright); a path id
holding one, or a company or connection id off the one id syntax (`schemas/ids.py`), is the 404 of a missing id.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import parse_qsl

from starlette.types import Scope

from schemas.errors import ApiError, ErrorCode
from schemas.ids import is_valid_id

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
ID_PARAMETERS = {"company_id": "company", "connection_id": "connection"}  # and the word their 404 uses


def check_parameters(scope: Scope, path_params: dict[str, Any]) -> None:
    """Raise ApiError (400 for a query parameter, 404 for a path id that cannot exist) unless all are usable."""
    query = parse_qsl(scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True)
    for name, value in query:
        if _CONTROL.search(name) or _CONTROL.search(value):
            raise ApiError(400, ErrorCode.INVALID_PARAMETER, f"the query parameter {name!r} holds a control character")
    for name, value in path_params.items():
        text = str(value)
        if _CONTROL.search(text) or (name in ID_PARAMETERS and not is_valid_id(text)):
            word = ID_PARAMETERS.get(name) or name.removesuffix("_id").replace("_", " ")
            raise ApiError(404, ErrorCode.NOT_FOUND, f"no {word} with id {text!r}")
