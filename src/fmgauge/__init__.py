"""fmgauge: measure whether a foundation-model pipeline can be trusted, one question at a time.

Subsystems: :mod:`fmgauge.weaklabels` (the weak-label crossover study). Shared pieces live in :mod:`fmgauge.core`.
Nothing heavy is imported here; import the subsystem you need.
"""

__version__ = "0.1.0"
