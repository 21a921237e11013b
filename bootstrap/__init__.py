"""homing bootstrap registry: a small, signed, durable directory of nodes."""
