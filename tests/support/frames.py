"""What an ASGI request holds while it waits: the locals of the suspended frames under a task's coroutine."""

from __future__ import annotations

from typing import Any


def locals_held(coroutine: Any) -> list[Any]:
    """The values of every local variable of every frame suspended under `coroutine`."""
    values: list[Any] = []
    while coroutine is not None:
        frame = getattr(coroutine, "cr_frame", None) or getattr(coroutine, "ag_frame", None)
        if frame is not None:
            values.extend(frame.f_locals.values())
        coroutine = getattr(coroutine, "cr_await", None) or getattr(coroutine, "ag_await", None)
    return values
