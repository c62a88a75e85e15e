"""Trainer module file (run_fn, referenced by path) and the model it builds."""
