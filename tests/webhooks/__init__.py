"""webhooks.py: the webhook endpoint and its processing."""
