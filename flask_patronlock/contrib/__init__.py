"""Optional integrations, imported only when used (the core works without them)."""
