"""policy.py: entitlement and decisions, and Patreon's billing behaviour played against them."""
