"""What an ASGI request holds while it waits: the chain of suspended frames under a task's coroutine."""

from __future__ import annotations

from typing import Any


def frames_held(coroutine: Any) -> list[str]:
    """The functions of every frame suspended under `coroutine`, outermost first."""
    names = []
    while coroutine is not None:
        code = getattr(coroutine, "cr_code", None) or getattr(coroutine, "ag_code", None)
        if code is not None:
            names.append(f"{code.co_filename}:{code.co_qualname}")
        coroutine = getattr(coroutine, "cr_await", None) or getattr(coroutine, "ag_await", None)
    return names


def locals_held(coroutine: Any) -> list[Any]:
    """The values of every local variable of every frame suspended under `coroutine`."""
    values: list[Any] = []
    while coroutine is not None:
        frame = getattr(coroutine, "cr_frame", None) or getattr(coroutine, "ag_frame", None)
        if frame is not None:
            values.extend(frame.f_locals.values())
        coroutine = getattr(coroutine, "cr_await", None) or getattr(coroutine, "ag_await", None)
    return values
