"""How results are written down: the Markdown/HTML report renderer and matplotlib figures.

Knows nothing of runs or models; everything above draws with it.
"""
