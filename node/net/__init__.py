"""The I/O layer: thin trio drivers (sockets, timers, UDP, peer links, client WebSocket server, HTTP)."""
