"""The simulated runtime: a complete CRI server with no real processes, for scale and teaching."""
