"""CRI servers that minikubelet ships: each is a separate process behind a socket."""
