"""sync.py: reconcile runs against the live sandbox, drift, faults and a state machine."""
