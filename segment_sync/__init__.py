"""segment-sync: Dagster-native reverse ETL from warehouse models to Segment."""

from typing import Any

__version__ = "0.1.0"
__all__ = ["SegmentSyncComponent", "__version__"]


def __getattr__(name: str) -> Any:
    # The component (and Dagster) load only when asked for, so the pure core imports in milliseconds.
    if name == "SegmentSyncComponent":
        from segment_sync.component import SegmentSyncComponent

        return SegmentSyncComponent
    raise AttributeError(f"module 'segment_sync' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), "SegmentSyncComponent"])
