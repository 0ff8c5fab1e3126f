"""The kubelet's side of an inline CSI volume lives in the package (the sandbox
and the benchmarks use it too)."""

from csi_driver.sandbox.kubelet import (
                                        DRIVER,
                                        POD_INFO_KEYS,
                                        mount_capability,
                                        prepare_volume_dir,
                                        publish_request,
                                        publish_request_at,
                                        remove_volume_dir,
                                        target_path,
                                        unpublish_request,
                                        volume_dir,
                                        volume_id,
)

__all__ = ["DRIVER", "POD_INFO_KEYS", "mount_capability", "prepare_volume_dir", "publish_request",
           "publish_request_at", "remove_volume_dir", "target_path", "unpublish_request",
           "volume_dir", "volume_id"]
