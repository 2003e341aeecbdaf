"""Signal isolation and filter folding."""

from __future__ import annotations

from typing import Any

import pytest
from blinker import Namespace

from flask_patronlock.signals import apply_filter, filter_receiver, send_action

ns = Namespace()


def test_action_isolation_and_strict(caplog: pytest.LogCaptureFixture) -> None:
    sig = ns.signal("action-isolation")
    calls: list[str] = []

    def bad(sender: Any, **kw: Any) -> None:
        raise ValueError("add-on bug")

    def good(sender: Any, **kw: Any) -> None:
        calls.append(kw["x"])

    sig.connect(bad)
    sig.connect(good)
    send_action(sig, "app", x="one")
    assert calls == ["one"]
    assert "test_signals.test_action_isolation_and_strict.<locals>.bad failed" in caplog.text
    with pytest.raises(ValueError, match="add-on bug"):
        send_action(sig, "app", strict=True, x="two")


def test_filter_folds_by_priority_then_connection_order() -> None:
    sig = ns.signal("filter-order")

    @filter_receiver(sig, priority=60)
    def late(sender: Any, value: list[str], **kw: Any) -> list[str]:
        return [*value, "late"]

    @filter_receiver(sig)
    def first_default(sender: Any, value: list[str], **kw: Any) -> list[str]:
        return [*value, "default-1"]

    @filter_receiver(sig)
    def keeps(sender: Any, value: list[str], **kw: Any) -> None:
        return None  # None leaves the value alone

    @filter_receiver(sig, priority=10)
    def early(sender: Any, value: list[str], **kw: Any) -> list[str]:
        return [*value, f"early-{kw['tag']}"]

    assert apply_filter(sig, "app", ["start"], tag="t") == ["start", "early-t", "default-1", "late"]


def test_filter_isolation_and_sender_scoping(caplog: pytest.LogCaptureFixture) -> None:
    sig = ns.signal("filter-isolation")

    @filter_receiver(sig)
    def broken(sender: Any, value: int, **kw: Any) -> int:
        raise RuntimeError("nope")

    @filter_receiver(sig, sender="other-app")
    def other(sender: Any, value: int, **kw: Any) -> int:
        return value * 100

    @filter_receiver(sig)
    def double(sender: Any, value: int, **kw: Any) -> int:
        return value * 2

    assert apply_filter(sig, "app", 3) == 6
    assert apply_filter(sig, "other-app", 3) == 600
    assert "its change is ignored" in caplog.text
    with pytest.raises(RuntimeError):
        apply_filter(sig, "app", 3, strict=True)
    assert apply_filter(ns.signal("no-receivers"), "app", 7) == 7
