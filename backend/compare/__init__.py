"""Compare runs side by side (loss, settings, samples, outcome) and launch A/B comparisons.

Kept import-light: the submodules are imported where they are used (plotly and PIL only by the
charts, the grid and the report).
"""
