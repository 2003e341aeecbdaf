"""The project's test suite: one folder per part of flask_patronlock, shared fixtures in ``conftest.py`` and shared
factories and constants in :mod:`tests.helpers`."""
