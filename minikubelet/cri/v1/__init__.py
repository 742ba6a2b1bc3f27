"""CRI runtime.v1 wire contract: api.proto and the Python modules generated from it."""
