"""Evaluating a trained run: metrics and predictions, external folders, explanation scores,
the failure gallery and the input check's measurement.
"""
