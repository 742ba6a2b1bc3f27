"""The Container Runtime Interface: our runtime.v1 wire contract and its client."""
