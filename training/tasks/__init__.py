"""Training tasks: each builds its network, dataset and loss, and runs one step for the Trainer."""

from __future__ import annotations

from torch import Tensor


class TaskBase:
    """What the Trainer asks of a task beyond ``step`` and ``train_dataset``; tasks override as needed.
    Subclasses set ``arch``, ``model`` (an nn.Module), ``model_cfg`` (a dataclass) and ``forward_module``."""

    arch = ""
    # parameters that get no gradient in this task (e.g. the pose head during flow pre-training):
    # DistributedDataParallel must then look for them every step
    has_unused_parameters = False

    def model_config(self) -> dict:
        from ros2_pose6d.config import to_dict
        return to_dict(self.model_cfg)

    def extra_tensors(self) -> dict[str, Tensor]:
        return {}

    def load_extra(self, extra: dict[str, Tensor]) -> None:
        pass

    def before_step(self, step: int) -> None:
        """Called with the step about to run (resumed runs included): for schedules inside the loss."""

    def after_step(self, step: int) -> None:
        pass


def build_task(cfg, registry):
    """The task named by cfg.task."""
    if cfg.pairs and cfg.task != "flow":
        raise ValueError(f"pairs: only task flow draws procedural pairs; task {cfg.task} would ignore them")
    if cfg.task == "detector":
        from ros2_pose6d.training.tasks.detector_task import DetectorTask
        return DetectorTask(cfg, registry)
    if cfg.task == "deepim":
        from ros2_pose6d.training.tasks.deepim_task import DeepimTask
        return DeepimTask(cfg, registry)
    if cfg.task == "flow":
        from ros2_pose6d.training.tasks.flow_task import FlowPretrainTask
        return FlowPretrainTask(cfg, registry)
    from ros2_pose6d.training.tasks.nemo_task import NemoTask
    return NemoTask(cfg, registry)
