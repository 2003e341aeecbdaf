"""store.py and models.py: the single write path, its reads, SQLite's one writer and the column types."""
