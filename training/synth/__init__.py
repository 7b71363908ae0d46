"""Synthetic BOP-format data from object meshes: our only training data (nothing can be downloaded)."""

from ros2_pose6d.training.synth.config import SynthConfig
from ros2_pose6d.training.synth.generate import generate_dataset, render_sample

__all__ = ["SynthConfig", "generate_dataset", "render_sample"]
