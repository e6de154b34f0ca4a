"""Benchmarks that print figures and their ratio to a target."""
