"""SWIM with Lifeguard: the membership core (protocol), its member table, suspicion, broadcasts and settings."""
