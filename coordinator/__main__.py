"""`python -m coordinator` = `halo-coord`."""

from coordinator.cli import main

main()
