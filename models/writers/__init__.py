"""Tiny random checkpoints in each family's released layout (one module per family)."""
