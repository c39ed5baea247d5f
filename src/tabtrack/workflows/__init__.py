"""Workflows: each starts with one `_check_*` that returns normalised inputs, then computes."""
