"""homing: a federated signalling network for end-to-end encrypted calls (the node and discovery library)."""

__version__ = "0.1.0"
