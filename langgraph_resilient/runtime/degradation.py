"""``ServiceLevel`` and ``DegradationManager``: switch optional features off when the system is
unhealthy, and back on when it recovers."""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from enum import IntEnum

from langgraph_resilient.observability.events import EventBus, EventKind, ResilienceEvent

__all__ = ["DegradationManager", "ServiceLevel"]


class ServiceLevel(IntEnum):
    """How much the service offers right now; higher is more. Comparable: ``FULL > MINIMAL``.

    - ``FULL``: everything on.
    - ``DEGRADED``: optional, expensive features off (those registered at ``FULL``).
    - ``MINIMAL``: only the core path (features registered at ``MINIMAL``) stays on.
    """

    MINIMAL = 0
    DEGRADED = 1
    FULL = 2


class DegradationManager:
    """Decides which features are on, from the service level and manual switches.

    A feature registered at level ``L`` is on while the current level is ``L`` or higher,
    unless switched off (or on) by hand with :meth:`disable` / :meth:`enable`. Nodes whose
    policy has ``feature="name"`` are skipped while the feature is off: their ``Fallback``
    answers, or ``FeatureDisabledError`` is raised if they have none.

    Args:
        features: feature name -> the lowest level at which it stays on, e.g.
            ``{"advanced_analysis": ServiceLevel.FULL, "search": ServiceLevel.DEGRADED}``.
        level: the starting level.
        unknown_feature_level: the level assumed for a feature not in ``features`` (default
            ``FULL``: unknown features are the first to go).
        events: event bus for ``DEGRADATION_LEVEL`` and ``FEATURE_TOGGLED`` events.

    The level is set by you (:meth:`set_level`) or by a ``HealthChecker``. Every change is
    published on ``events``; :meth:`add_listener` subscribes to this manager's events there.
    """

    def __init__(
        self,
        features: Mapping[str, ServiceLevel] | None = None,
        *,
        level: ServiceLevel = ServiceLevel.FULL,
        unknown_feature_level: ServiceLevel = ServiceLevel.FULL,
        events: EventBus | None = None,
    ) -> None:
        self._lock = threading.Lock()
        self._levels: dict[str, ServiceLevel] = {}
        for name, min_level in (features or {}).items():
            self._levels[name] = ServiceLevel(min_level)
        self._level = ServiceLevel(level)
        self.unknown_feature_level = ServiceLevel(unknown_feature_level)
        self._overrides: dict[str, bool] = {}
        self.events = events or EventBus.default()
        #: Names of features switched off right now (read on every guarded call).
        self.disabled: frozenset[str] = frozenset()
        #: True when features not in ``features`` are off at the current level.
        self.unknown_disabled = False
        self._recompute()

    def __repr__(self) -> str:
        return f"DegradationManager(level={self._level.name}, disabled={sorted(self.disabled)})"

    @property
    def level(self) -> ServiceLevel:
        """The current service level."""
        return self._level

    def register(self, feature: str, min_level: ServiceLevel) -> None:
        """Declare (or change) the lowest level at which ``feature`` stays on."""
        with self._lock:
            before = self._enabled_map()
            self._levels[feature] = ServiceLevel(min_level)
            self._recompute()
            after = self._enabled_map()
        self._announce_toggles(before, after, "registered")

    def is_enabled(self, feature: str) -> bool:
        """Whether ``feature`` is on right now."""
        if feature in self.disabled:
            return False
        return feature in self._levels or feature in self._overrides or not self.unknown_disabled

    def set_level(self, level: ServiceLevel, *, reason: str = "manual") -> bool:
        """Change the service level; returns False if it was already ``level``."""
        level = ServiceLevel(level)
        with self._lock:
            old = self._level
            if old is level:
                return False
            before = self._enabled_map()
            self._level = level
            self._recompute()
            after = self._enabled_map()
        self._notify(
            ResilienceEvent(
                EventKind.DEGRADATION_LEVEL,
                "degradation",
                {"old": old, "new": level, "reason": reason, "manager": self},
            )
        )
        self._announce_toggles(before, after, reason)
        return True

    def disable(self, feature: str, *, reason: str = "manual") -> None:
        """Switch ``feature`` off whatever the level, until :meth:`reset` or :meth:`enable`."""
        self._override(feature, False, reason)

    def enable(self, feature: str, *, reason: str = "manual") -> None:
        """Switch ``feature`` on whatever the level, until :meth:`reset` or :meth:`disable`."""
        self._override(feature, True, reason)

    def reset(self, feature: str, *, reason: str = "manual") -> None:
        """Drop the manual switch of ``feature``: the level decides again."""
        with self._lock:
            before = self._enabled_map()
            self._overrides.pop(feature, None)
            self._recompute()
            after = self._enabled_map()
        self._announce_toggles(before, after, reason)

    def add_listener(self, listener: Callable[[ResilienceEvent], None]) -> Callable[[], None]:
        """Call ``listener(event)`` on this manager's level changes and feature toggles (a
        subscription to its event bus, filtered); returns a remover."""

        def mine(event: ResilienceEvent) -> None:
            if event.detail.get("manager") is self:
                listener(event)

        return self.events.subscribe(mine)

    # ------------------------------------------------------------------ internals

    def _override(self, feature: str, enabled: bool, reason: str) -> None:
        with self._lock:
            before = self._enabled_map()
            self._overrides[feature] = enabled
            self._recompute()
            after = self._enabled_map()
        self._announce_toggles(before, after, reason)

    def _enabled_map(self) -> dict[str, bool]:
        names = set(self._levels) | set(self._overrides)
        return {name: name not in self.disabled for name in names}

    def _recompute(self) -> None:
        level = self._level
        off = {name for name, min_level in self._levels.items() if level < min_level}
        for name, enabled in self._overrides.items():
            if enabled:
                off.discard(name)
            else:
                off.add(name)
        self.unknown_disabled = level < self.unknown_feature_level
        self.disabled = frozenset(off)

    def _announce_toggles(
        self, before: Mapping[str, bool], after: Mapping[str, bool], reason: str
    ) -> None:
        for name, enabled in after.items():
            if before.get(name, True) != enabled:
                self._notify(
                    ResilienceEvent(
                        EventKind.FEATURE_TOGGLED,
                        name,
                        {"enabled": enabled, "reason": reason, "manager": self},
                    )
                )

    def _notify(self, event: ResilienceEvent) -> None:
        if self.events.active:
            self.events.emit(event)
