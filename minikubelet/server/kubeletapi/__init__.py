"""The kubelet's public HTTPS API (port 10250): serving, authentication, authorization.

``tls`` gives the serving certificate (the operator's, or a self-signed one kept
under the root dir) and the server's :class:`ssl.SSLContext`; ``auth`` gives the
kubelet's ``server/auth``: x509 client certificates, bearer tokens through
TokenReview, anonymous requests, and authorization through SubjectAccessReview with
the kubelet's mapping of paths to node subresources, as an aiohttp middleware.
"""
