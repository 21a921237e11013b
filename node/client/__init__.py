"""The client side: the client connection library and the discovery chain. Imports the protocol layer only."""
