"""Faults injected into the sandbox's members listing (errors, rate limits, slow, truncated or drifting pages,
repeated cursors, dropped members) and the whole API going down."""

from __future__ import annotations

from typing import Any

from .core import SandboxCore
from .entities import FAULT_KINDS, Fault, FaultKind, NotFoundError, SandboxError

__all__ = ["FaultsMixin"]


class FaultsMixin(SandboxCore):
    """The injectable faults of a :class:`~.state.Sandbox` (see the module docstring)."""

    def add_fault(
        self,
        kind: FaultKind | str,
        *,
        page: int | None = None,
        times: int | None = 1,
        status: int = 500,
        retry_after: int = 30,
        seconds: float = 1.0,
        count: int = 1,
        field: str | None = None,
        value: Any = None,
        remove: bool = False,
        status_of: str | None = None,
    ) -> Fault:
        """Inject a fault into ``GET /campaigns/<id>/members``.

        :param kind: ``"error"`` (answer ``status``, default 500, in Patreon's error format), ``"rate_limit"``
            (429 with ``retry_after_seconds`` = ``retry_after`` and a ``Retry-After`` header), ``"slow"`` (sleep
            ``seconds`` then answer), ``"truncate"`` (200 with the JSON body cut in half), ``"repeat_cursor"``
            (the page's next cursor is the one that fetched it, i.e. the previous page's), ``"drop"`` (the page
            silently omits ``count`` members while ``meta.pagination.total`` still counts them), ``"drift"`` (Patreon's
            data changes shape: every member of the page, or those whose ``patron_status`` is ``status_of``, serves
            ``value`` for ``field`` -- an attribute name, or ``"relationships.<name>"`` for a relationship's
            ``data`` -- or, with ``remove``, leaves it out).
        :param page: the 1-based page it hits (``None``: every page).
        :param times: how many times it fires (``None``: every time, e.g. an exhausted rate limit).
        """
        if kind not in FAULT_KINDS:
            raise SandboxError(f"unknown fault kind {kind!r}; one of {', '.join(FAULT_KINDS)}")
        if page is not None and page < 1:
            raise SandboxError("page is 1-based")
        if times is not None and times < 1:
            raise SandboxError("times must be >= 1 or None")
        if kind == "error" and not 400 <= status <= 599:
            raise SandboxError("status must be an HTTP error status")
        if kind == "drift" and not field:
            raise SandboxError("a drift fault needs the field it changes")
        with self.lock:
            fault = Fault(
                id=str(next(self._fault_ids)),
                kind=kind,
                page=page,
                times=times,
                status=status,
                retry_after=retry_after,
                seconds=seconds,
                count=count,
                field=field,
                value=value,
                remove=remove,
                status_of=status_of,
            )
            self.faults.append(fault)
            return fault

    def remove_fault(self, fault_id: str) -> None:
        """Remove one fault. :raises NotFoundError: no such fault."""
        with self.lock:
            for index, fault in enumerate(self.faults):
                if fault.id == str(fault_id):
                    del self.faults[index]
                    return
        raise NotFoundError(f"no fault {fault_id!r}")

    def clear_faults(self) -> None:
        """Remove every fault and bring the API back up."""
        with self.lock:
            self.faults.clear()
            self._api_down = False

    def take_faults(self, page: int) -> list[Fault]:
        """The faults that fire for ``page`` of the members listing now (one per kind, oldest first; every ``drift``
        fault, each changing its own field), using up one-shot ones."""
        with self.lock:
            fired: list[Fault] = []
            kinds: set[str] = set()
            for fault in list(self.faults):
                if (fault.page is None or fault.page == page) and (fault.kind not in kinds or fault.kind == "drift"):
                    kinds.add(fault.kind)
                    fault.hits += 1
                    fired.append(fault)
                    if fault.times is not None:
                        fault.times -= 1
                        if fault.times <= 0:
                            self.faults.remove(fault)
            return fired

    @property
    def api_down(self) -> bool:
        """When true every ``/api/...`` call (API v2 and the token endpoint) answers 503."""
        return self._api_down

    @api_down.setter
    def api_down(self, value: bool) -> None:
        with self.lock:
            self._api_down = bool(value)
