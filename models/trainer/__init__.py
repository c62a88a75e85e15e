"""The Trainer's module file (task.py: run_fn, referenced by path) and the
training procedure it runs: feature cache, head fitting, calibration, the
data-quality audit, the learning curve."""
