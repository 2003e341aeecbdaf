"""example_site/: the example site and its add-ons."""
