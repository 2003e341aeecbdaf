"""The project as a whole: packaging, and the docs' citations of tests."""
