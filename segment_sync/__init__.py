"""segment-sync: Dagster-native reverse ETL from warehouse models to Segment."""

from typing import Any

__version__ = "0.1.0"
__all__ = ["SegmentSyncComponent", "__version__"]


def __getattr__(name: str) -> Any:
    # Lazy, so the pure core (diff, events, batching, delivery) can be imported without Dagster.
    if name == "SegmentSyncComponent":
        from segment_sync.component import SegmentSyncComponent

        return SegmentSyncComponent
    raise AttributeError(name)
