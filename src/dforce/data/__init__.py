"""Datasets, environments and generators (one module per domain; heavy dependencies imported lazily)."""
