"""ExampleGen for a labeled image folder (custom Beam executor)."""
