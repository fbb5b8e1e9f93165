"""The embedded demo warehouse: a DuckDB file with users and accounts, and a change to sync."""

from __future__ import annotations

import os
from pathlib import Path

import duckdb

from segment_sync.storage import durable_file

_SEED = """
create table users as
select
    'u' || lpad(i::varchar, 3, '0')                    as user_id,
    'anon-' || i                                       as anon_id,
    'user' || i || '@example.com'                      as email,
    'User ' || i                                       as name,
    ['free', 'pro', 'team'][1 + i % 3]                 as plan,
    'acct' || (1 + i % 4)                              as account_id,
    i % 5 <> 0                                         as is_active,
    timestamp '2026-01-01 00:00:00' + to_days(i)       as updated_at,
    timestamp '2026-11-01 00:00:00' + to_hours(i)      as last_seen_at
from range(1, 21) t(i);

create table accounts as
select
    'acct' || i                                        as account_id,
    'Account ' || i                                    as name,
    (10 * i)::integer                                  as seats,
    'u' || lpad(i::varchar, 3, '0')                    as owner_user_id,
    (1000.25 * i)::decimal(18, 2)                      as mrr
from range(1, 5) t(i);
"""

_CHANGE = """
insert into users values
    ('u021', 'anon-21', 'user21@example.com', 'User 21', 'pro', 'acct1', true,
     timestamp '2026-11-28 09:00:00', timestamp '2026-11-28 09:00:00');
update users set plan = 'free', updated_at = timestamp '2026-11-28 10:00:00' where user_id = 'u002';
update users set last_seen_at = last_seen_at + interval 1 day where user_id = 'u003';
update users set is_active = false where user_id = 'u004';
delete from users where user_id = 'u007';
update accounts set seats = seats + 5 where account_id = 'acct2';
"""


def ensure_demo_warehouse(path: Path) -> Path:
    """Create and seed the demo DuckDB file unless it exists."""
    if path.exists():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    with duckdb.connect(str(tmp)) as conn:
        conn.execute(_SEED)
    durable_file.replace(tmp, path)
    return path


def change_demo_warehouse(path: Path) -> None:
    """Insert, update (a sent and an unsent column) and delete a few demo rows."""
    with duckdb.connect(str(path)) as conn:
        conn.execute(_CHANGE)
