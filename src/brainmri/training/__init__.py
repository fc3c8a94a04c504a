"""Training a run: the run folder and its records, the epoch loop, optimiser, sampling and
augmentation.
"""
