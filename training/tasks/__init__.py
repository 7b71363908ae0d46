"""Training tasks: each builds its network, dataset and loss, and runs one step for the Trainer."""

from __future__ import annotations


def build_task(cfg, registry):
    """The task named by cfg.task."""
    if cfg.task == "detector":
        from ros2_pose6d.training.tasks.detector_task import DetectorTask
        return DetectorTask(cfg, registry)
    if cfg.task == "deepim":
        from ros2_pose6d.training.tasks.deepim_task import DeepimTask
        return DeepimTask(cfg, registry)
    from ros2_pose6d.training.tasks.nemo_task import NemoTask
    return NemoTask(cfg, registry)
