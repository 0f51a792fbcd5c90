"""The estimation engine, arrays in and arrays out: families, cross-products and the profiled LMM deviance, PIRLS/Laplace/AGQ, optimizers and the fit drivers (no pandas results, no PyMC)."""
