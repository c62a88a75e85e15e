"""The versioned model registry: layout.py (folders, readers), publishing.py
(atomic publish), aliases.py, serving.py (TF Serving config), api.py (the
`Registry` consumers use) and cli.py (`python -m pipeline registry`)."""

from registry.api import ModelRef, Registry

__all__ = ['ModelRef', 'Registry']
