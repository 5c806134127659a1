"""Device calibration: microbenchmark runner (``python -m sim.calibrate.run``).

Kept free of imports on purpose: the runner must work where only torch,
numpy and pyyaml are installed.
"""
