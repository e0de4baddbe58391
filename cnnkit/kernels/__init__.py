"""Numba JIT kernels. Only cnnkit.ops calls these, with validated, contiguous 5-D arrays
(1-D and 2-D problems are viewed as 3-D ones with unit leading spatial axes), so each kernel
compiles once per dtype (float32, float64) and never raises for user mistakes."""
