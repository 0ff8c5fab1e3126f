"""Pulling instrumentation libraries from OCI registries.

``reference`` turns a volume's library attributes into an image reference;
``registry`` resolves that reference to this node's manifest and streams its
layers, verified against their digests and bounded in size and time. The HTTP
underneath (``transport``), authentication (``auth``) and manifest parsing
(``manifests``) are their own modules. Unpacking layers is ``layers``' job.
"""
