"""Numbers from predictions, no I/O: classification metrics with bootstrap CIs, paired
comparisons, temperature scaling and localisation scores.
"""
