"""Evaluation: metrics with confidence intervals, protocols and reports."""
