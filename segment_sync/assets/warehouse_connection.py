"""The warehouse engine's connection for one step: the URL, an engine, the engine's tables; errors as failures."""

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

import dagster as dg
import sqlalchemy as sa

from segment_sync.assets.names import ResourceKeys
from segment_sync.error_text import first_line
from segment_sync.storage.state import StateError
from segment_sync.warehouse.warehouse_error import WarehouseError, safe_url, without_password
from segment_sync.warehouse_engine.lease import Lease, LeaseError
from segment_sync.warehouse_engine.sessions import open_engine
from segment_sync.warehouse_engine.sql_diff import WarehouseDiffError
from segment_sync.warehouse_engine.state_tables import StateTables, StateTablesError
from segment_sync.warehouse_engine.warehouse_state import WarehouseState


@dataclass(frozen=True)
class WarehouseConnection:
    """What a warehouse-engine step works with."""

    url: str
    engine: sa.Engine
    tables: StateTables
    lease_seconds: int

    @contextlib.contextmanager
    def leased(self, name: str, what: str, run_id: str) -> Iterator[None]:
        """Hold a lease other than a sync's (a model's snapshot, say) for the block."""
        lease = Lease(self.engine, self.tables, name, run_id, self.lease_seconds, what=what)
        try:
            lease.acquire()
        except LeaseError as exc:
            raise StateError(f"{exc}") from None
        try:
            yield
        finally:
            lease.release()

    def state(self, sync: str, run_id: str) -> WarehouseState:
        """A sync's state in the warehouse, for one run."""
        return WarehouseState(self.engine, self.tables, sync, run_id, lease_seconds=self.lease_seconds)


@contextlib.contextmanager
def warehouse_connection(
    context: dg.AssetExecutionContext, keys: ResourceKeys, what: str
) -> Iterator[WarehouseConnection]:
    """Open the warehouse for a step; any warehouse or state error fails the run with a message without the password.

    `what` names the step's subject in messages (`model 'users'`, `sync 'traits'`).
    """
    warehouse = keys.warehouse_of(context)
    url = warehouse.url(keys.state_of(context).root())
    try:
        tables = StateTables(warehouse.state_schema)
        engine = open_engine(url)
    except (StateTablesError, sa.exc.ArgumentError, ValueError) as exc:
        raise dg.Failure(f"{what}: {without_password(first_line(exc), url)}") from None
    try:
        tables.create(engine)
        yield WarehouseConnection(url, engine, tables, warehouse.lease_seconds)
    except (StateError, StateTablesError, WarehouseDiffError, WarehouseError) as exc:  # they name the sync or model
        raise dg.Failure(without_password(str(exc), url)) from None
    except sa.exc.SQLAlchemyError as exc:
        detail = without_password(first_line(getattr(exc, "orig", None) or exc), url)
        raise dg.Failure(f"{what}: the warehouse ({safe_url(url)}) answered: {detail}") from None
    finally:
        engine.dispose()
