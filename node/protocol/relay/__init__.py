"""The cross-node relay: its settings, the rendezvous tables (leases, mailboxes) and the relay core."""
