"""Text the ledger can store, on every database it runs on.

JSON can spell two things no ledger database stores as text: U+0000 (PostgreSQL refuses it) and a lone UTF-16
surrogate (UTF-8 cannot encode it). A webhook holding either is found here once, before anything is written.
"""

from __future__ import annotations

import re
from typing import Any

_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")
_SPELLED = r"\\u(?:0000|[dD][89a-fA-F][0-9a-fA-F]{2})"
_SPELLED_TEXT = re.compile(_SPELLED)
_SPELLED_BYTES = re.compile(_SPELLED.encode())


def escape(text: str) -> str:
    """`text` with each NUL and lone surrogate written as its JSON escape (`\\u0000`, `\\ud800`): storable,
    readable, and the same string again to a JSON parser where it stands inside a JSON string."""
    return _UNSTORABLE.sub(lambda found: f"\\u{ord(found.group()):04x}", text)


def _kind(char: str) -> str:
    if char == "\x00":
        return "a NUL character (\\u0000)"
    return f"a lone UTF-16 surrogate (\\u{ord(char):04x})"


def unstorable(text: str) -> str | None:
    """What in `text` no ledger database stores (a phrase), or None when it can be stored as is."""
    if "\x00" not in text and (text.isascii() or _encodes(text)):
        return None
    found = _UNSTORABLE.search(text)
    return _kind(found.group()) if found else None


def _encodes(text: str) -> bool:
    try:
        text.encode()  # far quicker than a search for surrogates
    except UnicodeEncodeError:
        return False
    return True


def _suspect(text: str | bytes) -> bool:
    """Whether JSON `text` may decode to an unstorable string: it holds one, or a `\\u` escape of one. Plain
    substring tests first: this runs on every webhook."""
    if isinstance(text, bytes):  # valid UTF-8 holds no surrogate
        return b"\x00" in text or (b"\\" in text and _SPELLED_BYTES.search(text) is not None)
    if "\x00" in text or not (text.isascii() or _encodes(text)):
        return True
    return "\\" in text and _SPELLED_TEXT.search(text) is not None


def unstorable_at(value: Any, text: str | bytes | None = None) -> str | None:
    """Where in a decoded JSON value a string (a value or a key) holds unstorable text, as a phrase; None when
    every string is storable. `text`, the JSON `value` was decoded from, lets the common case skip the walk."""
    if text is not None and not _suspect(text):
        return None
    stack: list[tuple[Any, str]] = [(value, "")]
    while stack:  # not recursive: a body may nest as deep as the JSON decoder allows
        item, where = stack.pop()
        if isinstance(item, str):
            if found := _UNSTORABLE.search(item):
                return f"{where or 'the body'} holds {_kind(found.group())}"
        elif isinstance(item, dict):
            for key in item:
                if found := _UNSTORABLE.search(key):
                    return f'the key "{escape(key)}" of {where or "the body"} holds {_kind(found.group())}'
            stack.extend((child, f"{where}.{key}" if where else key) for key, child in reversed(item.items()))
        elif isinstance(item, list):
            stack.extend((child, f"{where}[{index}]") for index, child in reversed(list(enumerate(item))))
    return None
