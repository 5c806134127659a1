"""Performance model: memory fit, per-operator roofline step times, throughput, training.

Pure functions of frozen inputs; no simpy, no randomness, no I/O beyond loading the library.
"""
