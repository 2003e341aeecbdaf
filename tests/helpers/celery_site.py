"""A site for the Celery test's worker process: the Flask app and Celery app built from environment variables."""

from __future__ import annotations

import json
import os
from pathlib import Path

from celery import Celery
from flask import Flask
from flask_sqlalchemy import SQLAlchemy

from flask_patronlock import PatronLock
from flask_patronlock.contrib.celery import init_celery


def make_site(db_url: str, patreon_config: dict[str, object], broker: str, queue: str) -> tuple[Flask, Celery]:
    app = Flask("celery_site")
    app.config.update(SQLALCHEMY_DATABASE_URI=db_url, PATRONLOCK_JOBS="celery", PATRONLOCK_STRICT_SIGNALS=True)
    app.config.update(patreon_config)
    db = SQLAlchemy()
    db.init_app(app)
    PatronLock(app, db=db)
    celery = Celery("celery_site", broker=broker, backend=broker)
    celery.conf.update(task_default_queue=queue, broker_connection_retry_on_startup=True)
    init_celery(celery, app)
    return app, celery


def site_env(db_url: str, patreon_config: dict[str, object], broker: str, queue: str) -> dict[str, str]:
    """The environment a child process (worker, beat, gunicorn) needs to build the same site as :func:`make_site`."""
    root = Path(__file__).resolve().parents[2]
    return dict(
        os.environ,
        PYTHONPATH=os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")]),
        CELERY_SITE_DB=db_url,
        CELERY_SITE_PATREON=json.dumps(patreon_config),
        CELERY_SITE_BROKER=broker,
        CELERY_SITE_QUEUE=queue,
    )


if "CELERY_SITE_DB" in os.environ:  # a worker, beat or gunicorn process
    flask_app, celery = make_site(
        os.environ["CELERY_SITE_DB"],
        json.loads(os.environ["CELERY_SITE_PATREON"]),
        os.environ["CELERY_SITE_BROKER"],
        os.environ["CELERY_SITE_QUEUE"],
    )
