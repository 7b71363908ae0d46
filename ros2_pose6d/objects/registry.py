"""The object set a pipeline knows: ids, names, meshes and symmetries, from ``config/objects.yaml``
or straight from a BOP ``models/`` folder."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np
import yaml

from ros2_pose6d.config import parse_yaml
from ros2_pose6d.objects.mesh import ObjectMesh, load_mesh
from ros2_pose6d.objects.models_info import ModelInfo, ModelsInfoError, read_models_info


class RegistryError(ValueError):
    """An objects.yaml or models folder that cannot be used; the message names the file."""


@dataclass
class ObjectModel:
    """One known object. ``mesh`` loads on first use (metres)."""

    obj_id: int
    name: str
    mesh_path: Path
    info: ModelInfo
    symmetry_steps: int = 36
    _mesh: ObjectMesh | None = field(default=None, repr=False)

    @property
    def mesh(self) -> ObjectMesh:
        if self._mesh is None:
            self._mesh = load_mesh(self.mesh_path)
        return self._mesh

    @property
    def diameter(self) -> float:
        return self.info.diameter

    @cached_property
    def symmetries(self) -> np.ndarray:
        """(S, 4, 4) symmetry transforms, identity first, t in metres."""
        return self.info.symmetry_transforms(self.symmetry_steps)


class ObjectRegistry:
    """Ordered set of ObjectModel, indexed by BOP obj_id. Order defines class indices of the networks."""

    def __init__(self, objects: list[ObjectModel], name: str = "objects") -> None:
        if not objects:
            raise RegistryError(f"{name}: the object set is empty")
        ids = [o.obj_id for o in objects]
        if len(set(ids)) != len(ids):
            raise RegistryError(f"{name}: duplicate object ids {ids}")
        self.name = name
        self.objects = list(objects)
        self._by_id = {o.obj_id: o for o in objects}

    def __len__(self) -> int:
        return len(self.objects)

    def __iter__(self):
        return iter(self.objects)

    def __getitem__(self, obj_id: int) -> ObjectModel:
        try:
            return self._by_id[obj_id]
        except KeyError:
            raise KeyError(f"object id {obj_id} is not in {self.name} (ids {sorted(self._by_id)})") from None

    @property
    def ids(self) -> list[int]:
        return [o.obj_id for o in self.objects]

    def index(self, obj_id: int) -> int:
        """Class index of an object id (its position in the set)."""
        return self.ids.index(obj_id)

    @classmethod
    def from_bop_models(cls, models_dir: str | Path, names: dict[int, str] | None = None,
                        obj_ids: list[int] | None = None) -> ObjectRegistry:
        """All objects (or ``obj_ids``) of a BOP models folder: obj_XXXXXX.ply + models_info.json."""
        models_dir = Path(models_dir)
        try:
            infos = read_models_info(models_dir / "models_info.json")
        except ModelsInfoError as exc:
            raise RegistryError(str(exc)) from exc
        objects = []
        for obj_id in obj_ids if obj_ids is not None else sorted(infos):
            if obj_id not in infos:
                raise RegistryError(f"{models_dir / 'models_info.json'}: no entry for object {obj_id}")
            mesh_path = models_dir / f"obj_{obj_id:06d}.ply"
            if not mesh_path.is_file():
                raise RegistryError(f"{mesh_path}: mesh file not found")
            name = (names or {}).get(obj_id, f"obj_{obj_id:06d}")
            objects.append(ObjectModel(obj_id, name, mesh_path, infos[obj_id]))
        return cls(objects, name=str(models_dir))

    @classmethod
    def from_yaml(cls, path: str | Path) -> ObjectRegistry:
        """objects.yaml: ``models_dir`` (relative to the yaml file) and ``objects: [{id, name, mesh?}]``."""
        path = Path(path)
        try:
            cfg = parse_yaml(path.read_text())
        except FileNotFoundError as exc:
            raise RegistryError(f"{path}: file not found") from exc
        except yaml.YAMLError as exc:
            raise RegistryError(f"{path}: not valid YAML ({exc})") from exc
        if not isinstance(cfg, dict) or "models_dir" not in cfg or "objects" not in cfg:
            raise RegistryError(f"{path}: expected keys 'models_dir' and 'objects'")
        unknown = set(cfg) - {"models_dir", "objects", "name"}
        if unknown:
            raise RegistryError(f"{path}: unknown keys {sorted(unknown)}")
        models_dir = (path.parent / cfg["models_dir"]).resolve()
        try:
            infos = read_models_info(models_dir / "models_info.json")
        except ModelsInfoError as exc:
            raise RegistryError(f"{path}: {exc}") from exc
        objects = []
        for entry in cfg["objects"]:
            if not isinstance(entry, dict) or "id" not in entry or "name" not in entry:
                raise RegistryError(f"{path}: each object needs 'id' and 'name', got {entry!r}")
            obj_id = int(entry["id"])
            if obj_id not in infos:
                raise RegistryError(f"{path}: object {obj_id} has no entry in {models_dir / 'models_info.json'}")
            mesh_path = models_dir / entry.get("mesh", f"obj_{obj_id:06d}.ply")
            if not mesh_path.is_file():
                raise RegistryError(f"{path}: mesh of object {obj_id} not found: {mesh_path}")
            objects.append(ObjectModel(obj_id, str(entry["name"]), mesh_path, infos[obj_id],
                                       int(entry.get("symmetry_steps", 36))))
        return cls(objects, name=cfg.get("name", str(path)))
