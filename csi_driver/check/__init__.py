"""``datadog-csi-driver check``: find what still reaches the agent through ``hostPath``.

Reads the cluster with get/list requests only and never changes it:

- ``command``: the subcommand's flags; ``kube``: the API server through the
  Kubernetes client (credentials, paging, errors); ``resources``: what is read;
- ``scan``: every workload kind and the namespaces, cluster-wide or namespace by
  namespace when that is all the user may list;
- ``workloads``: one workload per owner, with the pod template to judge;
- ``paths``: which host paths reach the agent's or a container runtime's sockets;
- ``replacement``: the CSI volumes and mounts that replace such a ``hostPath``;
- ``podsecurity``: a namespace's Pod Security levels and a template's violations;
- ``analysis``: one workload's findings, verdicts and patch; ``patches``: the
  replacement as an RFC 6902 JSON patch;
- ``installation``: the CSIDriver object, each node's CSINode and the DaemonSet;
- ``document``, ``render`` and ``table``: the report as JSON/YAML and as text
  for an 80-column terminal.

The driver itself never imports this package; only ``kube`` loads the
Kubernetes client, when the check runs.
"""
