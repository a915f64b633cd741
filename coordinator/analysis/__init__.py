"""Analyses across datasets: cross-device latency monotonicity (rank agreement, proxies)."""
