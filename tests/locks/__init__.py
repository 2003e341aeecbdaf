"""Locks and what a page view shows: locks.py, paths.py, viewers.py, banners.py, templating.py, explain.py."""
