"""Imported first by the benchmark fork server (see ``agent.bench.job._context``), never by the
daemon itself.

Each child the fork server forks re-runs the parent's main module (multiprocessing's __main__
fix-up). When the agent runs as ``python -m agent.daemon``, the fork server has that module
loaded already, and runpy warns on every job that this "may result in unpredictable
behaviour". It does not here: the child only ever runs ``child_main``. The filter is set in the
fork server, so the children inherit it and the daemon's own warnings are untouched.
"""

import warnings

warnings.filterwarnings(
    "ignore",
    message=r"'agent\.[\w.]+' found in sys\.modules after import of package 'agent'",
    category=RuntimeWarning,
)
