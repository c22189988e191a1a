"""Datasets, environments and generators, one module (or subpackage) per domain."""
