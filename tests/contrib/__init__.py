"""flask_patronlock.contrib: Celery, and the scaled deployment built on it."""
