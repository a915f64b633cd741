"""halofarm coordinator: the laptop side (CLI halo-coord)."""
