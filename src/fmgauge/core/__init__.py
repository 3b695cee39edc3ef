"""Pieces shared by every fmgauge subsystem: registries, data, models, stats, runner, store, report."""
