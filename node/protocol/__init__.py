"""The pure protocol layer: wire formats, SWIM, relay and rendezvous, crypto, keys, node lists. No I/O."""
