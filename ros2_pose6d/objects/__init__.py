"""Object models: meshes (metres), BOP models_info with symmetries, the object registry, demo objects."""

from ros2_pose6d.objects.mesh import (
    MeshError,
    ObjectMesh,
    farthest_point_sampling,
    load_mesh,
    mesh_diameter,
    sample_surface,
)
from ros2_pose6d.objects.models_info import (
    ContinuousSymmetry,
    ModelInfo,
    ModelsInfoError,
    read_models_info,
    symmetry_transforms,
    write_models_info,
)
from ros2_pose6d.objects.registry import ObjectModel, ObjectRegistry, RegistryError

__all__ = [
    "ContinuousSymmetry", "MeshError", "ModelInfo", "ModelsInfoError", "ObjectMesh", "ObjectModel",
    "ObjectRegistry", "RegistryError", "farthest_point_sampling", "load_mesh", "mesh_diameter",
    "read_models_info", "sample_surface", "symmetry_transforms", "write_models_info",
]
