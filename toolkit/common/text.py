"""Short texts for messages: an error's first line, "did you mean ...?" hints."""

from __future__ import annotations

import difflib


def first_line(error: BaseException, limit: int = 300) -> str:
    """The first non-blank line of an error's message (its type's name when it has none),
    cut to `limit` characters: libraries' messages can run to pages (a C++ stack)."""
    lines = [line for line in str(error).strip().splitlines() if line.strip()]
    return (lines[0] if lines else type(error).__name__)[:limit]


def close_matches(value, choices, count: int = 3) -> list[str]:
    """The choices spelled most like `value` (ignoring case), best first, as the choices spell them."""
    by_lower = {str(choice).lower(): str(choice) for choice in choices}
    close = difflib.get_close_matches(str(value).lower(), list(by_lower), n=count, cutoff=0.5)
    return [by_lower[match] for match in close]


def did_you_mean(value, choices, listed: int = 8) -> str:
    """' (did you mean a, b?)' for names close to `value`; else ' (choose from a, b, …)' naming
    up to `listed` choices; '' when there are none. Meant to follow "unknown thing 'value'"."""
    choices = [str(choice) for choice in choices]
    close = close_matches(value, choices)
    if close:
        return f" (did you mean {', '.join(close)}?)"
    if not choices:
        return ""
    more = ", …" if len(choices) > listed else ""
    return f" (choose from {', '.join(choices[:listed])}{more})"
