"""halofarm halo: the HALO learned optimizer in NumPy and everything it adapts.

Optimizers share one functional interface (``halo.optim``), optimizees do their own backprop
(``halo.optimizees``; ``population`` runs P copies at once), domain-shift tasks ship their data
(``halo.tasks``), layer-wise stochastic update sparsity lives in ``halo.sparsity`` and the
gradient-norm regularizer in ``halo.regularizer``. ``halo.adapt`` is the adaptation loop,
``halo.tune`` the baselines' learning-rate search, ``halo.energy`` the energy model and
``halo.calibrate`` its on-board calibration; ``halo.meta`` meta-trains the optimizer with
evolution strategies (``python -m halo.meta.train``). Runs on Python 3.8 with numpy 1.24;
imports nothing of ours.
"""

from __future__ import annotations
