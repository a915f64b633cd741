"""halofarm power: sources of rail power (INA3221 on Jetsons and Pis, hwmon/RAPL, serial meters,
a labelled model estimate, simulated boards), rail policies, the sampler and energy integration.

Python 3.8 compatible; imports nothing of ours but ``firmware_bridge``.
"""
