"""The node\x27s API server client and what it keeps in step with the API: objects, events."""
