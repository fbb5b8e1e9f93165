"""Warehouse errors a user can act on, with the URL's password never in them."""

from __future__ import annotations

import sqlalchemy as sa

from segment_sync.error_text import first_line
from segment_sync.spec import ModelSpec


class WarehouseError(RuntimeError):
    """The warehouse could not be read; the message names the model and never the password."""


def safe_url(url: str) -> str:
    """The URL with any password masked, for messages."""
    try:
        return sa.make_url(url).render_as_string(hide_password=True)
    except (sa.exc.ArgumentError, ValueError):
        return "<unparseable warehouse URL>"


def dialect_of(url: str) -> str:
    """The SQLAlchemy dialect name of a URL (duckdb, postgresql, sqlite, ...)."""
    return sa.make_url(url).get_backend_name()


def without_password(text: str, url: str) -> str:
    """The text with the URL's password, if it has one, masked."""
    try:
        password = sa.make_url(url).password
    except (sa.exc.ArgumentError, ValueError):
        return text
    return text.replace(password, "***") if password else text


def unusable_url(model: ModelSpec, url: str, exc: BaseException) -> WarehouseError:
    """The error for a warehouse URL that no driver can use."""
    detail = without_password(first_line(exc), url)
    return WarehouseError(f"model {model.name!r}: the warehouse URL is not usable: {detail}")


def read_failed(model: ModelSpec, url: str, exc: BaseException) -> WarehouseError:
    """The error for a read that the warehouse refused or could not serve."""
    detail = without_password(first_line(exc), url)
    return WarehouseError(
        f"model {model.name!r}: reading from {safe_url(url)} failed: {detail}. "
        "Check that the warehouse is up and the query runs there."
    )
