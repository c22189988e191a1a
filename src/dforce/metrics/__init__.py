"""Evaluation metrics (one module per domain)."""
