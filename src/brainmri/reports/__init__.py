"""The comparison report: its sections, the repeats over seeds, the reference paper and the
reporting checklists.
"""
