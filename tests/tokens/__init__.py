"""Tokens: accounts.py (a patron's), creator.py (the creator's), encryption at rest (crypto.py) and its keys, and
entitlement tokens (entitlement_tokens.py)."""
