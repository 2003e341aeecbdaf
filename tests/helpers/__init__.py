"""What the tests share besides fixtures: sites, users, tiers, patrons, clocks and the sandbox wiring."""
