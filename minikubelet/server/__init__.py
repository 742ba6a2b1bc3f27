"""The kubelet's local API: a small HTTP server on a unix socket, and its client.

``view`` is the read/act contract the kubelet core implements; ``api`` serves it;
``client`` is what the CLI's client-side commands speak.
"""
