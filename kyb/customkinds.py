"""The kinds CustomResourceDefinitions make, served in this process: an informer of the CRDs
registers the kind of each established one in ``schemas.registry`` (and its changes), and
unregisters it when the CRD is gone. The api, the apiserver and the garbage collector run one.

``refresh()`` reads the CRDs afresh: a process that meets a kind it does not know yet (a CRD
made a moment ago through another api replica) looks again before it says the kind is unknown.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import structlog

from kyb.informer import Informer
from kyb.store import Store
from schemas import registry
from schemas.apiextensions import CustomResourceDefinition, custom_kind, established
from schemas.meta import Object

log = structlog.get_logger("kyb.customkinds")

CRD_KIND = "CustomResourceDefinition"
REFRESH_EVERY = 0.5  # the least time between two fresh readings on a miss


def serve(crd: CustomResourceDefinition) -> registry.KindInfo | None:
    """Register the kind of an established CRD; the kind served, or None."""
    if not established(crd):
        return None
    try:
        info = custom_kind(crd)
    except (ValueError, KeyError, IndexError):
        return None
    if not info.api_versions:
        registry.unregister_custom(crd.metadata.name)
        return None
    return info if registry.register_custom(info) else None


class CustomKinds:
    """See the module docstring. ``on_change(info, gone)`` is called after each kind change."""

    def __init__(self, store: Store, nc: Any, *,
                 on_change: Callable[[registry.KindInfo, bool], Any] | None = None) -> None:
        self.store = store
        self.on_change = on_change
        self.informer = Informer(nc, CRD_KIND)
        self.informer.add_handler(self._changed)
        self._last_refresh = 0.0
        self._lock = asyncio.Lock()

    async def start(self, timeout: float = 30.0) -> None:
        await self.informer.start()
        await self.informer.wait_synced(timeout)

    async def stop(self) -> None:
        await self.informer.stop()

    def _changed(self, event: str, new: Object | None, old: Object | None, _headers: dict[str, str]) -> None:
        if new is not None and isinstance(new, CustomResourceDefinition):
            self.apply(new)
        elif old is not None and isinstance(old, CustomResourceDefinition):
            self.forget(old.metadata.name)

    def apply(self, crd: CustomResourceDefinition) -> registry.KindInfo | None:
        info = serve(crd)
        if info is not None and self.on_change is not None:
            self.on_change(info, False)
        return info

    def forget(self, name: str) -> None:
        info = registry.unregister_custom(name)
        if info is not None and self.on_change is not None:
            self.on_change(info, True)

    def crd(self, name: str) -> CustomResourceDefinition | None:
        obj = self.informer.get(f"_.{name}")
        return obj if isinstance(obj, CustomResourceDefinition) else None

    def crd_of(self, info: registry.KindInfo) -> CustomResourceDefinition | None:
        return self.crd(info.custom.crd) if info.custom is not None else None

    async def refresh(self) -> bool:
        """Read the CRDs afresh (at most every REFRESH_EVERY seconds); True when it did."""
        async with self._lock:
            if time.monotonic() - self._last_refresh < REFRESH_EVERY:
                return False
            crds = await self.store.list(CRD_KIND)
            self._last_refresh = time.monotonic()
        for crd in crds:
            if isinstance(crd, CustomResourceDefinition):
                self.apply(crd)
        return True
