"""On-device benchmark job: the timing protocol of TFLite ``benchmark_model`` in a child process.

Entry point for the daemon and the CLI: :func:`agent.bench.job.run_bench_job`. Kept light: importing
this package loads neither numpy nor a TFLite runtime.
"""

from __future__ import annotations
