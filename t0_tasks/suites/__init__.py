"""Evaluation suites beyond T0's held-out mixture."""
