"""What every bundled CRI server shares: the domain model, the gRPC adapter, the listener."""
