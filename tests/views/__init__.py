"""The patron-facing views and oauth.py: connect, log in with Patreon, status messages, OAuth security."""
