"""A reconcile run keeps the cyclic garbage collector off the heap that existed before it (flask_patronlock.collector),
and gives it back: to the collector when the run ends, untouched to a site that froze its own."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from flask import Flask

from flask_patronlock.collector import heap_frozen
from flask_patronlock.sandbox import Sandbox
from flask_patronlock.sync import Progress, run_sync
from tests.helpers.sync import fast_client, sandbox_app

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(autouse=True)
def _thawed() -> Iterator[None]:
    """Each test starts and ends with nothing frozen and the collector on (as pytest runs)."""
    assert gc.get_freeze_count() == 0 and gc.isenabled()
    try:
        yield
    finally:
        gc.unfreeze()
        gc.enable()


class _Cycle:
    """An object in a reference cycle: only the cyclic collector frees it."""

    def __init__(self) -> None:
        self.me = self


def _frozen_during_run(app: Flask, sandbox: Sandbox, during: Callable[[], None] | None = None) -> list[int]:
    counts: list[int] = []

    def progress(_: Progress) -> None:
        counts.append(gc.get_freeze_count())
        if during is not None:
            during()

    with fast_client(sandbox) as client:
        result = run_sync(app, client=client, trigger="test", progress=progress)
    assert result.status == "complete"
    return counts


@pytest.mark.patreon_sandbox(members=120)
def test_a_run_freezes_the_heap_it_found_and_thaws_it_after(
    make_app: Callable[..., Flask], patreon_sandbox: Sandbox
) -> None:
    app = sandbox_app(make_app, patreon_sandbox)  # 50 members a page
    before = _Cycle()
    ref = weakref.ref(before)
    held: list[Any] = [before]
    del before

    def drop_it() -> None:
        held.clear()  # garbage now, but frozen: the collector does not free it during the run ...
        gc.collect()
        assert ref() is not None

    counts = _frozen_during_run(app, patreon_sandbox, drop_it)
    assert len(counts) == 3 and all(count > 1000 for count in counts)  # the whole heap, every page
    assert gc.get_freeze_count() == 0
    gc.collect()
    assert ref() is None  # ... and frees it once the run has thawed the heap


@pytest.mark.patreon_sandbox(members=40)
def test_the_freeze_can_be_turned_off(make_app: Callable[..., Flask], patreon_sandbox: Sandbox) -> None:
    app = sandbox_app(make_app, patreon_sandbox, PATRONLOCK_SYNC_FREEZE_HEAP=False)
    assert _frozen_during_run(app, patreon_sandbox) == [0]


@pytest.mark.patreon_sandbox(members=40)
def test_a_heap_the_site_froze_itself_stays_as_the_site_left_it(
    make_app: Callable[..., Flask], patreon_sandbox: Sandbox
) -> None:
    app = sandbox_app(make_app, patreon_sandbox)
    gc.freeze()  # e.g. a site that froze its heap before forking its workers
    frozen = gc.get_freeze_count()
    assert _frozen_during_run(app, patreon_sandbox)[0] <= frozen  # the run froze nothing of its own
    assert 0 < gc.get_freeze_count() <= frozen  # and did not thaw the site's


@pytest.mark.patreon_sandbox(members=40)
def test_objects_frozen_during_a_run_are_thawed_with_the_runs(
    make_app: Callable[..., Flask], patreon_sandbox: Sandbox
) -> None:
    # documented: telling them apart would mean counting the heap one object at a time at every run
    app = sandbox_app(make_app, patreon_sandbox)
    _frozen_during_run(app, patreon_sandbox, gc.freeze)
    assert gc.get_freeze_count() == 0


def test_overlapping_runs_share_one_freeze_and_the_last_one_thaws_it() -> None:
    with heap_frozen() as outer:
        assert outer and gc.get_freeze_count() > 0
        with heap_frozen() as inner:
            assert inner
        assert gc.get_freeze_count() > 0  # the outer run is still on
    assert gc.get_freeze_count() == 0


def test_the_collector_switched_off_is_left_alone() -> None:
    gc.disable()
    with heap_frozen() as frozen:
        assert frozen is False and gc.get_freeze_count() == 0
    assert not gc.isenabled()


def test_turned_off_it_freezes_nothing() -> None:
    with heap_frozen(False) as frozen:
        assert frozen is False and gc.get_freeze_count() == 0


def test_an_interpreter_without_a_permanent_generation_is_left_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    from flask_patronlock import collector

    monkeypatch.setattr(collector, "_CAN_FREEZE", False)  # PyPy's gc has no freeze()
    with heap_frozen() as frozen:
        assert frozen is False and gc.get_freeze_count() == 0


def test_a_failing_run_thaws_the_heap_too() -> None:
    with pytest.raises(RuntimeError), heap_frozen():
        assert gc.get_freeze_count() > 0
        raise RuntimeError("the run failed")
    assert gc.get_freeze_count() == 0
