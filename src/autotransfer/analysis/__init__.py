"""Measurements and decisions without side effects: similarity, the plan's rules, metrics."""
