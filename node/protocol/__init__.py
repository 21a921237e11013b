"""Pure, sans-IO protocol cores (no trio, sockets, clock or global randomness)."""
