"""The quality gate: TFMA configuration and a reader for its results."""
