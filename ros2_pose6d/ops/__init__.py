"""Multi-scale deformable attention (kernel + reference) and the backend report."""

from ros2_pose6d._ext import Backend, backend
from ros2_pose6d.ops.ms_deform_attn import (
    MSDeformAttn,
    ms_deform_attn,
    ms_deform_attn_reference,
)

__all__ = ["Backend", "MSDeformAttn", "backend", "ms_deform_attn", "ms_deform_attn_reference"]
