"""Fuzz targets for every parser of outside bytes (:mod:`fuzz.targets`) and the atheris harness
that drives them (``python fuzz/run.py``). The hypothesis tests under ``tests/`` use the same
targets, so both fuzzers hold the parsers to one contract."""
