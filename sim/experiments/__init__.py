"""Experiments over a scenario: sweeps, Monte Carlo, sensitivity, flip points, an optimiser.

They call the pipeline many times through an executor and never reach inside a run.
"""
