"""Which strings from a client can be stored: the one test every reader of client input applies.

A JSON string may spell any code point as a ``\\u`` escape, U+0000 and the lone surrogates U+D800–U+DFFF
among them. PostgreSQL refuses a NUL in any text value, and neither database driver can encode a lone
surrogate (UTF-8 has no bytes for one): such a string reaching a query is a database error, so it is
refused where it enters, with a 400 that names it.
"""

from __future__ import annotations


def unstorable(text: str) -> str | None:
    """What in `text` no database stores (a sentence fragment), or None when it can be stored as is."""
    if "\x00" in text:
        return "a NUL character (\\u0000)"
    if text.isascii():
        return None
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return "a lone surrogate (\\ud800 to \\udfff)"
    return None
