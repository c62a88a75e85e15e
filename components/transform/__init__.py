"""Transform module file (preprocessing_fn), referenced by path."""
