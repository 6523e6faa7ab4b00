"""Merging the target sources: the static config plus whatever discovery finds.

Each source (``static``, ``peers``, ``services``, …) owns a set of targets and replaces it whole on every
update; the merged set is pushed to whoever applies it (the scheduler). A source that stops updating — the
API server being down, say — keeps its last set, so probing goes on with the last known targets.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Mapping

from .model import AnyTarget, TargetKey

STATIC = "static"


class TargetSources:
    def __init__(self, static: Iterable[AnyTarget], apply: Callable[[list[AnyTarget]], None]) -> None:
        self._apply = apply
        self._by_source: dict[str, tuple[AnyTarget, ...]] = {STATIC: tuple(static)}

    def update(self, source: str, targets: Iterable[AnyTarget]) -> None:
        """Replace ``source``'s targets and apply the merged set."""
        stamped = tuple(t if t.source == source else dataclasses.replace(t, source=source) for t in targets)
        if self._by_source.get(source) == stamped:
            return
        self._by_source[source] = stamped
        self.apply()

    def apply(self) -> None:
        self._apply(self.merged())

    def merged(self) -> list[AnyTarget]:
        """All targets, one per key; a static target wins over a discovered one with the same key, since
        it is what the operator wrote."""
        out: dict[TargetKey, AnyTarget] = {}
        for source in sorted(self._by_source, key=lambda s: s != STATIC):
            for target in self._by_source[source]:
                out.setdefault(target.key, target)
        return list(out.values())

    def counts(self) -> Mapping[str, int]:
        """Targets each source yields (before merging), for the discovery self-metrics."""
        return {source: len(targets) for source, targets in self._by_source.items()}
