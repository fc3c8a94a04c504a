"""The reporting checklists (CLAIM 2024 and TRIPOD+AI) a comparison report answers, item by
item.
"""
