"""Liveness, readiness and startup probes: runners, workers and the results caches."""
