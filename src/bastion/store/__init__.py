"""State stores behind one protocol: memory (unit tests), SQLite (embedded default)."""
