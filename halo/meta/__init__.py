"""Meta-training of the learned optimizer without autodiff: evolution strategies over truncated
unrolls of adaptation runs (``objective``: what is minimised; ``problems``: the adaptation
problems it is measured on; ``es``: populations of perturbed optimizers and the gradient
estimators; ``train``: the loop, checkpoints and ``python -m halo.meta.train``)."""
