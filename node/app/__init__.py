"""The node application: composition root, configuration, operations endpoints, metrics, logging."""
