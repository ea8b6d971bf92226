"""XMem (Cheng & Schwing, ECCV 2022) written for this package: network, memory, streaming inference, checkpoints.

Module docstrings state the semantics (they follow the reference implementation); the pipeline uses it through
``reasonvos_ros.backends.xmem_tracker.XMemTracker``.
"""

from .checkpoint import CheckpointError, build_network, golden_network, load_network, load_state_dict
from .inference import FrameGeometry, InferenceSettings, XMemInference
from .memory import MemorySettings, MemoryStore
from .network import KeyFeatures, XMemConfig, XMemNetwork

__all__ = [
    "CheckpointError",
    "FrameGeometry",
    "InferenceSettings",
    "KeyFeatures",
    "MemorySettings",
    "MemoryStore",
    "XMemConfig",
    "XMemInference",
    "XMemNetwork",
    "build_network",
    "golden_network",
    "load_network",
    "load_state_dict",
]
