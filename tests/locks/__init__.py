"""Locks and what a page view shows: locks.py, paths.py, viewers.py, banners.py, templating.py, explain.py, and
locked files, signed download links and private feeds (files.py, file_links.py, feeds.py)."""
