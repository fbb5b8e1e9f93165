"""Crash-safe files: written aside, made durable, then renamed over the old one (readers see old or new, never half)."""

from __future__ import annotations

import os
from pathlib import Path


def write_bytes(path: Path, data: bytes) -> None:
    """Replace a file's content durably."""
    tmp = aside(path)
    with open(tmp, "wb") as f:
        f.write(data)
    replace(tmp, path)


def aside(path: Path) -> Path:
    """The temporary file a replacement of `path` is written to first."""
    return path.with_name(path.name + ".tmp")


def replace(source: Path, target: Path) -> None:
    """Make `source` durable, then rename it over `target` and make the rename durable."""
    sync_file(source)
    os.replace(source, target)
    sync_folder(target.parent)


def sync_file(path: Path) -> None:
    """Flush a file's content to disk."""
    with open(path, "rb+") as f:
        os.fsync(f.fileno())


def sync_folder(path: Path) -> None:
    """Flush a folder's entries (a rename, a new or removed file) to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
