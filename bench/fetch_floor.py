"""The fetch+parse floor: page every member of a sandbox campaign through the real client, over loopback HTTP.

Later sync work is measured against this floor (``bench/sync_100k.py`` divides a full reconcile run by it), so what is
timed here is exactly what a run cannot avoid: the requests, the JSON decoding and the parsing into snapshots.

    python bench/fetch_floor.py [--members 100000] [--rounds 3]

Prints the median time, members/s and the number of API requests; the last line is ``members_per_s=<x>``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from flask_patronlock.patreon import PatreonClient, RateLimiter
from flask_patronlock.sandbox import Sandbox, SandboxServer


@dataclass(frozen=True)
class Floor:
    """One timed pass over every page."""

    seconds: float
    members: int
    requests: int

    @property
    def members_per_s(self) -> float:
        return self.members / self.seconds


def sandbox_with_members(count: int, *, seed: int = 1) -> tuple[Sandbox, SandboxServer]:
    """A served sandbox whose campaign has ``count`` generated members."""
    sandbox = Sandbox(seed=seed)
    sandbox.generate_members(count)
    server = SandboxServer(sandbox).start()
    return sandbox, server


def client_for(sandbox: Sandbox) -> PatreonClient:
    """A client with the creator's token; its own generous limiter so the floor measures work, not throttling
    (100 pages of 1,000 stay under Patreon's 100 requests per 2 s either way)."""
    assert sandbox.url is not None
    return PatreonClient(
        client_id=sandbox.client_id,
        client_secret=sandbox.client_secret,
        access_token=sandbox.creator_access_token,
        api_base=sandbox.url,
        oauth_base=sandbox.url,
        rate_limiter=RateLimiter(max_calls=100, period=2.0),
    )


def measure_floor(sandbox: Sandbox) -> Floor:
    """Time one pass of fetch+parse over every page (1,000 members per page)."""
    client = client_for(sandbox)
    members = 0
    start = time.perf_counter()
    for page in client.iter_member_pages(sandbox.campaign.id, page_size=1000):
        members += len(page.members)
    seconds = time.perf_counter() - start
    client.close()
    return Floor(seconds=seconds, members=members, requests=client.request_count)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--members", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    started = time.perf_counter()
    sandbox, server = sandbox_with_members(args.members)
    print(f"generated and served {args.members} members in {time.perf_counter() - started:.2f}s")
    try:
        measure_floor(sandbox)  # warm the sandbox's per-member document caches, as a second sync would find them
        floors = [measure_floor(sandbox) for _ in range(args.rounds)]
    finally:
        server.stop()
    for floor in floors:
        assert floor.members == args.members, f"read {floor.members} members, expected {args.members}"
    median = statistics.median(f.seconds for f in floors)
    print(f"rounds={args.rounds} median={median:.2f}s requests={floors[0].requests}")
    print(f"members_per_s={args.members / median:.0f}")


if __name__ == "__main__":
    main()
