"""pytest plugin: a live Patreon sandbox per test (registered as the ``patronlock_sandbox`` pytest11 entry point,
so installing flask-patronlock is all it takes).

The ``patreon_sandbox`` fixture yields a :class:`~flask_patronlock.sandbox.Sandbox` already served on
``127.0.0.1`` (a free port) by a thread; ``patreon_sandbox.url`` is its base URL and ``patreon_sandbox.config``
the ``PATRONLOCK_*`` keys pointing a host app at it. The server stops when the test ends. A site's test::

    def test_gold_patron_sees_the_video(patreon_sandbox, app, client):
        app.config.update(patreon_sandbox.config)          # client id/secret, creator token, campaign,
                                                           # webhook secrets, API and OAuth base URLs
        member = patreon_sandbox.add_patron("ann@example.com", tier="Gold")

        # log in through the real OAuth flow, non-interactively: the sandbox's authorize page approves at once
        # for ?sandbox_user=<id or email>&sandbox_decision=approve (deny: sandbox_decision=deny)
        ...

        # scenarios, then the webhooks they caused, delivered into the app under test:
        patreon_sandbox.transport = lambda uri, headers, body: client.post(
            urlsplit(uri).path, data=body, headers=headers).status_code
        patreon_sandbox.decline(member)
        patreon_sandbox.advance(days=8)                    # the clock moves only when told
        patreon_sandbox.flush_webhooks()

Webhooks are queued and delivered only by ``flush_webhooks()`` (deterministic); call
``patreon_sandbox.start_webhook_worker()`` to have a thread deliver them as they come, e.g. to a live server.

Configure a test's sandbox with the ``patreon_sandbox`` marker: its keyword arguments go to ``Sandbox(...)``,
except ``members=N`` which generates N members::

    @pytest.mark.patreon_sandbox(members=2500, seed=7, max_webhook_failures=3)
    def test_sync_reads_every_page(patreon_sandbox): ...

``scenarios=[...]`` then plays named scenarios of Patreon's behaviour (:mod:`.scenarios`), in order, each a name or
a ``(name, {params})`` pair; a test can also call ``patreon_sandbox.scenario(name, **params)`` when it is ready::

    @pytest.mark.patreon_sandbox(members=50, scenarios=["start_of_month", ("declined_for_months", {"months": 2})])
    def test_nobody_loses_access_on_the_first(patreon_sandbox): ...
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from .state import Sandbox

__all__ = ["patreon_sandbox", "pytest_configure"]


def pytest_configure(config: pytest.Config) -> None:
    """Register the ``patreon_sandbox`` marker."""
    config.addinivalue_line(
        "markers",
        "patreon_sandbox(members=0, scenarios=(), **sandbox_kwargs): configure the patreon_sandbox fixture "
        "(keyword arguments of flask_patronlock.sandbox.Sandbox; members=N generates N members; scenarios plays "
        "named scenarios, each a name or a (name, params) pair)",
    )


@pytest.fixture
def patreon_sandbox(request: pytest.FixtureRequest) -> Iterator[Sandbox]:
    """A :class:`~flask_patronlock.sandbox.Sandbox` served live on 127.0.0.1 for this test (see the module doc)."""
    # imported here so that merely loading the plugin stays cheap and cannot break unrelated test runs
    from .server import SandboxServer
    from .state import Sandbox

    kwargs: dict[str, Any] = {}
    marker = request.node.get_closest_marker("patreon_sandbox")
    if marker is not None:
        kwargs.update(marker.kwargs)
    members = int(kwargs.pop("members", 0))
    scenarios = list(kwargs.pop("scenarios", ()))
    sandbox = Sandbox(**kwargs)
    if members:
        sandbox.generate_members(members)
    for entry in scenarios:
        name, params = (entry, {}) if isinstance(entry, str) else entry
        sandbox.scenario(name, **params)
    server = SandboxServer(sandbox).start()
    try:
        yield sandbox
    finally:
        server.stop()
        sandbox.stop_webhook_worker()
