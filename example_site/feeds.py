"""The example site's private feed: an RSS feed of the posts for each patron, with the locked wallpaper as an
enclosure for patrons the ``downloads`` lock lets in. Patrons find their feed's address at ``/patreon/feed``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from flask import Flask, render_template

from flask_patronlock import can_view, send_locked_file
from flask_patronlock.feeds import feed_url, feed_view

from .downloads import LOCK, files_folder


def init_feeds(app: Flask, posts: Callable[[], list[Any]]) -> None:
    """The feed (``PATRONLOCK_FEED_ENDPOINT = "feed"``) of ``posts()`` and its enclosures (from the downloads
    folder)."""
    folder = files_folder(app)

    @app.get("/feed/<feed_token>/posts.xml")
    @feed_view
    def feed() -> Any:
        items = [(post, can_view(post.lock)) for post in posts()]  # a free post's lock is "": public
        xml = render_template("feed.xml", items=items, downloads=can_view(LOCK), feed_url=feed_url)
        return xml, {"Content-Type": "application/rss+xml; charset=utf-8"}

    @app.get("/feed/<feed_token>/files/<path:name>")
    @feed_view
    def feed_file(name: str) -> Any:
        return send_locked_file(LOCK, name, directory=folder)
