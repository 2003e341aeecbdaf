"""extension.py and the services it wires: settings, signals, jobs, add-ons, health and the live check."""
