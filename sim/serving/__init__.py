"""Serving simulator: request arrival streams (`traffic`), replicas, schedulers and routing.

Simpy objects never leave this package; between layers it passes frozen dataclasses, numpy arrays
and DataFrames.
"""
