"""autotransfer: transfer learning on images as a reproducible pipeline.

The library is pure Python + torch; Prefect lives in ``tasks/`` and ``flows/`` only.
"""

from autotransfer.ops.telemetry import disable_telemetry

disable_telemetry()

__version__ = "0.1.0"
