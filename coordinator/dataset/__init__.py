"""Datasets: the measurements of one search space on one device configuration, aggregated per
architecture, from the store's results and from imported public latency tables."""
