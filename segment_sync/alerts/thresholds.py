"""Each sync's rejected-rows threshold: a row count ("25") or a share of the rows a run tried to send ("5%")."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class RejectedThreshold:
    """Rejected rows above which a run is worth a warning: a row count ("25") or a percentage ("5%")."""

    limit: float = 0.0
    percent: bool = False

    @classmethod
    def parse(cls, text: str) -> RejectedThreshold:
        """Read "0" (any rejected row), "25" (more than 25 rows) or "5%" (more than 5% of the rows sent)."""
        match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(%?)\s*", str(text))
        if not match or (match[2] and float(match[1]) > 100):
            raise ValueError(f"{text!r} is not a row count like '25' or a percentage like '5%'")
        return cls(float(match[1]), bool(match[2]))

    def exceeded(self, rejected: int, attempted: int) -> bool:
        """Whether a run that tried to send `attempted` rows and had `rejected` of them rejected is above it."""
        if self.percent:
            return rejected > 0 and rejected * 100 > self.limit * max(attempted, rejected)
        return rejected > self.limit

    def __str__(self) -> str:
        return f"{self.limit:g}%" if self.percent else count_text(self.limit, "row")


def parse_thresholds(syncs: list[str], given: Mapping[str, str] | None) -> dict[str, RejectedThreshold]:
    """Each sync's rejected-rows threshold from {sync: "25" or "5%"}; a sync left out warns on any rejected row."""
    unknown = sorted(set(given or {}) - set(syncs))
    if unknown:
        raise ValueError(
            f"rejected_rows_threshold: no sync is named {', '.join(map(repr, unknown))} (syncs: {', '.join(syncs)})"
        )
    thresholds = {}
    for sync in syncs:
        try:
            thresholds[sync] = RejectedThreshold.parse((given or {}).get(sync, "0"))
        except ValueError as exc:
            raise ValueError(f"rejected_rows_threshold.{sync}: {exc}") from None
    return thresholds


def count_text(n: float, noun: str) -> str:
    """ "1 row", "2 rows"."""
    return f"{n:g} {noun}" if n == 1 else f"{n:g} {noun}s"
