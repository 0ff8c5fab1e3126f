"""The kubelet's plugin registration API (generated from proto/pluginregistration.proto)."""
