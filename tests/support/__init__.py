"""Shared test fixtures: a demo agent, the driver as a real process, the
kubelet's way of calling it, pods in their own mount namespaces, and
snapshots of the mount table and the disk."""
