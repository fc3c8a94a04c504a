"""Whole studies: comparing architectures, reproducing the paper, the leakage study, and the
README's result tables.
"""
