"""An INSERT of a query's rows made in parts on concurrent connections: PostgreSQL never runs an INSERT ... SELECT
in parallel (and 15 runs no full join in parallel at all), so a big join split by a hash of its key takes one core
a part. Two parts took the 10M-row diff's join from 13.7-14.7 s to 7.2-7.3 s on 2 cores."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

import sqlalchemy as sa

PARTED_ROWS = 1_000_000  # below, one statement: its join takes about a second, a part's connection is not worth it
MAX_PARTS = 8


def parts_for(engine: sa.Engine, rows: int, parted_rows: int = PARTED_ROWS) -> int:
    """How many parts to join `rows` in: on PostgreSQL, as many processes as it gives one parallel query
    (`max_parallel_workers_per_gather`, 2 unless the server's owner set it; 0 or 1 keeps one statement), at most
    `MAX_PARTS`; elsewhere (or below `parted_rows`) one."""
    if engine.dialect.name != "postgresql" or rows < parted_rows:
        return 1
    with engine.connect() as conn:
        workers = int(conn.execute(sa.text("SHOW max_parallel_workers_per_gather")).scalar_one())
    return max(1, min(workers, MAX_PARTS))


def in_part(key: sa.ColumnElement[str], part: int, parts: int) -> sa.ColumnElement[bool]:
    """True for the keys of one part of `parts`: PostgreSQL's hash of the key's text, modulo `parts`."""
    return sa.func.mod(sa.func.hashtext(key).op("&")(0x7FFFFFFF), parts) == part


def insert_in_parts(
    engine: sa.Engine, target: sa.Table, columns: Sequence[str], part_query: Callable[[int], sa.Select], parts: int
) -> None:
    """Insert each part's rows (`part_query(i)`) into `target`, every part at once on a connection and in a
    transaction of its own; the first part's error is raised once all have ended."""

    def insert(part: int) -> None:
        with engine.begin() as conn:
            conn.execute(sa.insert(target).from_select(list(columns), part_query(part)))

    with ThreadPoolExecutor(max_workers=parts, thread_name_prefix="segment-sync-diff-part") as pool:
        done = [pool.submit(insert, part) for part in range(parts)]
    for part in done:
        part.result()
