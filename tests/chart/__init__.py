"""Tests of the Helm chart in charts/datadog-csi-driver and of deploy/."""
