"""A sync's lease in the warehouse: one run delivers at a time across machines, and a dead run's lease expires."""

from __future__ import annotations

import datetime as dt
import os
import socket
import threading
import uuid

import sqlalchemy as sa

from segment_sync.warehouse_engine.state_tables import StateTables

DEFAULT_TTL_SECONDS = 300  # renewed every third of it while the run lives


class LeaseError(RuntimeError):
    """The lease is held by another run, or was lost."""


class Lease:
    """Held from `acquire` to `release`; a thread renews it, and every journal write checks it is still held."""

    def __init__(
        self,
        engine: sa.Engine,
        tables: StateTables,
        sync: str,
        run_id: str | None = None,
        ttl_seconds: int = DEFAULT_TTL_SECONDS,
        *,
        what: str | None = None,
    ):
        self.engine, self.tables, self.sync = engine, tables, sync
        self.what = what or f"sync {sync!r}"  # what the lease guards, for messages
        self.run_id, self.ttl_seconds = run_id, ttl_seconds
        self.holder = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:12]}"
        self._stop = threading.Event()
        self._renewer: threading.Thread | None = None
        self.lost: str | None = None

    def acquire(self) -> None:
        """Take the lease, clearing one that expired (its run died); raise `LeaseError` if another run holds it."""
        leases = self.tables.leases
        with self.engine.begin() as conn:
            now = warehouse_now(conn)
            held = conn.execute(sa.select(leases).where(leases.c.sync == self.sync)).mappings().first()
            if held is not None:
                expires = _expiry(held)
                if expires > now:
                    raise LeaseError(
                        f"{self.what} is already running (run {held['run_id']}, on {held['holder']}); "
                        f"this run sent nothing. Its lease expires at {expires:%Y-%m-%d %H:%M:%S} UTC unless renewed."
                    )
                conn.execute(sa.delete(leases).where(leases.c.sync == self.sync, leases.c.holder == held["holder"]))
        try:
            with self.engine.begin() as conn:
                conn.execute(
                    sa.insert(leases).values(
                        sync=self.sync,
                        holder=self.holder,
                        run_id=self.run_id,
                        renewed_at=warehouse_now(conn),
                        ttl_seconds=self.ttl_seconds,
                    )
                )
        except sa.exc.IntegrityError:
            raise LeaseError(f"{self.what} is already running: another run took its lease just now") from None
        self._renewer = threading.Thread(target=self._renew_until_released, name="segment-sync-lease", daemon=True)
        self._renewer.start()

    def renew(self, conn: sa.Connection) -> None:
        """Renew the lease in the caller's transaction; raise `LeaseError` if this run no longer holds it."""
        leases = self.tables.leases
        renewed = conn.execute(
            sa.update(leases)
            .where(leases.c.sync == self.sync, leases.c.holder == self.holder)
            .values(renewed_at=warehouse_now(conn))
        )
        if renewed.rowcount != 1:
            self.lost = self.lost or "another run took it after it expired"
            raise LeaseError(
                f"{self.what}: this run's lease expired and another run took it ({self.lost}); this run "
                "stops here and the rows it had not recorded are sent again with the same messageIds"
            )

    def release(self) -> None:
        """Give the lease up (only if this run still holds it)."""
        self._stop.set()
        if self._renewer is not None:
            self._renewer.join()
            self._renewer = None
        leases = self.tables.leases
        with self.engine.begin() as conn:
            conn.execute(sa.delete(leases).where(leases.c.sync == self.sync, leases.c.holder == self.holder))

    def _renew_until_released(self) -> None:
        while not self._stop.wait(self.ttl_seconds / 3):
            try:
                with self.engine.begin() as conn:
                    self.renew(conn)
            except (LeaseError, sa.exc.SQLAlchemyError) as exc:
                self.lost = self.lost or f"it could not be renewed: {type(exc).__name__}"
                return


def expired_leases(conn: sa.Connection, tables: StateTables, prefix: str) -> list[sa.RowMapping]:
    """The leases whose name starts with `prefix` and whose run stopped renewing them in time."""
    leases, now = tables.leases, warehouse_now(conn)
    held = conn.execute(sa.select(leases).where(leases.c.sync.startswith(prefix, autoescape=True))).mappings()
    return [lease for lease in held if _expiry(lease) <= now]


def _expiry(held: sa.RowMapping) -> dt.datetime:
    return _utc(held["renewed_at"]) + dt.timedelta(seconds=held["ttl_seconds"])


def warehouse_now(conn: sa.Connection) -> dt.datetime:
    """The warehouse's clock, in UTC: every run's lease is timed by the same clock."""
    return _utc(conn.execute(sa.select(sa.func.current_timestamp())).scalar_one())


def _utc(value: dt.datetime) -> dt.datetime:
    return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)
