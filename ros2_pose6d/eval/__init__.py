"""Pose metrics, BOP results CSV and reports."""

from ros2_pose6d.eval.bop_csv import BopResult, read_bop_csv, write_bop_csv
from ros2_pose6d.eval.metrics import (
    add,
    add_or_adds,
    add_with_exact_part,
    adds,
    average_recall,
    cm_degree,
    mspd,
    mssd,
    pose_error_parts,
    proj2d,
    recall,
    rotation_error,
    translation_error,
    vsd,
)

__all__ = ["BopResult", "add", "add_or_adds", "add_with_exact_part", "adds", "average_recall", "cm_degree", "mspd",
           "mssd", "pose_error_parts", "proj2d", "read_bop_csv", "recall", "rotation_error", "translation_error", "vsd",
           "write_bop_csv"]
