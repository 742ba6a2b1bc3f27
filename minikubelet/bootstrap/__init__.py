"""Joining a cluster: discovery, TLS bootstrap and the node identity it leaves behind."""
