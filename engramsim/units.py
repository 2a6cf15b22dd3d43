"""Unit constants: multiply a figure in the named unit to get SI bytes or seconds.

Binary sizes are exact integers (so sizes computed from them stay whole); decimal rates are
floats. Names follow the keys of the presets (`hbm_GiB`, `h2d_GBps`, `latency_us`).
"""

KiB, MiB, GiB = 2**10, 2**20, 2**30
GB = 1e9
MS, US, NS = 1e-3, 1e-6, 1e-9
