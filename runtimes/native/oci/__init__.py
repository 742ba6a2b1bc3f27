"""The native runtime's containers: OCI bundles (pure spec generation) and runc under conmon."""
