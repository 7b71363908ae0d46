"""Mesh rendering on our rasteriser kernel: hard z-buffer in csrc, everything differentiable in PyTorch."""

from ros2_pose6d.render.interpolate import barycentrics, interpolate
from ros2_pose6d.render.rasterize import Fragments, RasterSettings, rasterize, rasterize_reference
from ros2_pose6d.render.renderer import Lighting, MeshRenderer, RenderOutput

__all__ = ["Fragments", "Lighting", "MeshRenderer", "RasterSettings", "RenderOutput", "barycentrics",
           "interpolate", "rasterize", "rasterize_reference"]
