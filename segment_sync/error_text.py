"""Error text that is short enough for a message."""


def first_line(exc: BaseException, limit: int = 300) -> str:
    """The first non-empty line of an exception's text (or its type), cut to `limit` characters."""
    lines = [line for line in str(exc).splitlines() if line.strip()]
    return lines[0][:limit] if lines else type(exc).__name__
