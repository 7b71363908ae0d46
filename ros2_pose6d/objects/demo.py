"""The demo object set: seven procedural, vertex-coloured objects of 8-24 cm, written in BOP layout.

Built from primitives joined by boolean union (manifold3d), subdivided so that the colour pattern is
resolved, and coloured with smooth functions of position that make the pose observable. Two objects
are symmetric and coloured to keep exactly that symmetry: ``tray`` (180 deg about z, discrete) and
``can`` (any rotation about z, continuous). Deterministic: same files on every run.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import trimesh

from ros2_pose6d.objects.mesh import mesh_diameter
from ros2_pose6d.objects.models_info import ContinuousSymmetry, ModelInfo, write_models_info

MAX_EDGE = 0.008  # [m] subdivision target so that colour varies within the silhouette


def _union(*meshes: trimesh.Trimesh) -> trimesh.Trimesh:
    return trimesh.boolean.union(list(meshes), engine="manifold")


def _moved(mesh: trimesh.Trimesh, xyz=(0.0, 0.0, 0.0), rot: tuple[float, tuple] | None = None) -> trimesh.Trimesh:
    mesh = mesh.copy()
    if rot is not None:
        mesh.apply_transform(trimesh.transformations.rotation_matrix(rot[0], rot[1]))
    mesh.apply_translation(xyz)
    return mesh


def _waves(p: np.ndarray, seed: int, base: tuple[float, float, float]) -> np.ndarray:
    """Smooth asymmetric colouring: base colour modulated by three plane waves of random direction."""
    rng = np.random.default_rng(seed)
    dirs = rng.normal(size=(3, 3))
    dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
    phase = rng.uniform(0, 2 * np.pi, 3)
    waves = 0.5 + 0.5 * np.sin(p @ dirs.T * 45.0 + phase)
    return np.clip(0.55 * np.asarray(base) + 0.45 * waves, 0, 1)


def _mug() -> tuple[trimesh.Trimesh, Callable]:
    body = trimesh.creation.cylinder(radius=0.04, height=0.095, sections=48)
    inner = _moved(trimesh.creation.cylinder(radius=0.034, height=0.09, sections=48), (0, 0, 0.01))
    cup = trimesh.boolean.difference([body, inner], engine="manifold")
    handle = _moved(trimesh.creation.torus(0.025, 0.007, major_sections=32, minor_sections=12),
                    (0.045, 0, 0), rot=(np.pi / 2, (1, 0, 0)))
    return _union(cup, handle), lambda p: _waves(p, 1, (0.85, 0.2, 0.15))


def _drill() -> tuple[trimesh.Trimesh, Callable]:
    body = trimesh.creation.box((0.16, 0.05, 0.06))
    grip = _moved(trimesh.creation.box((0.04, 0.045, 0.11)), (-0.03, 0, -0.075))
    chuck = _moved(trimesh.creation.cylinder(radius=0.018, height=0.05, sections=32), (0.1, 0, 0),
                   rot=(np.pi / 2, (0, 1, 0)))
    battery = _moved(trimesh.creation.box((0.07, 0.06, 0.025)), (-0.03, 0, -0.14))
    drill = _union(body, grip, chuck, battery)
    drill.apply_scale(0.92)  # keep the diameter under 25 cm
    return drill, lambda p: _waves(p, 2, (0.15, 0.55, 0.2))


def _duck() -> tuple[trimesh.Trimesh, Callable]:
    body = trimesh.creation.icosphere(subdivisions=3, radius=1.0)
    body.apply_scale((0.055, 0.04, 0.035))
    head = _moved(trimesh.creation.icosphere(subdivisions=3, radius=0.025), (0.04, 0, 0.04))
    beak = _moved(trimesh.creation.cone(radius=0.01, height=0.03, sections=24), (0.06, 0, 0.04),
                  rot=(np.pi / 2, (0, 1, 0)))
    tail = _moved(trimesh.creation.cone(radius=0.015, height=0.03, sections=24), (-0.05, 0, 0.01),
                  rot=(-np.pi / 2.5, (0, 1, 0)))
    return _union(body, head, beak, tail), lambda p: _waves(p, 3, (0.95, 0.8, 0.1))


def _house() -> tuple[trimesh.Trimesh, Callable]:
    walls = trimesh.creation.box((0.1, 0.08, 0.07))
    # triangular prism along y: ridge at z = 0.08, eaves at z = 0.035, 1 cm overhang
    ridge = [(-0.06, -0.045, 0.035), (0.06, -0.045, 0.035), (0.0, -0.045, 0.08)]
    prism = np.array(ridge + [(x, 0.045, z) for x, _, z in ridge])
    roof = trimesh.convex.convex_hull(prism)
    chimney = _moved(trimesh.creation.box((0.015, 0.015, 0.04)), (0.03, 0.02, 0.065))
    return _union(walls, roof, chimney), lambda p: _waves(p, 4, (0.2, 0.3, 0.85))


def _bracket() -> tuple[trimesh.Trimesh, Callable]:
    base = trimesh.creation.box((0.12, 0.05, 0.015))
    wall = _moved(trimesh.creation.box((0.015, 0.05, 0.08)), (-0.0525, 0, 0.0475))
    rib = _moved(trimesh.creation.box((0.05, 0.012, 0.05)), (-0.03, 0.0, 0.02), rot=(np.pi / 4, (0, 1, 0)))
    hole = _moved(trimesh.creation.cylinder(radius=0.01, height=0.05, sections=24), (0.035, 0, 0))
    solid = _union(base, wall, rib)
    return trimesh.boolean.difference([solid, hole], engine="manifold"), lambda p: _waves(p, 5, (0.6, 0.6, 0.65))


def _tray() -> tuple[trimesh.Trimesh, Callable]:
    """Discrete symmetry: 180 deg about z. Colour depends on x*y, x^2, y^2 and z only."""
    outer = trimesh.creation.box((0.2, 0.11, 0.04))
    pocket = _moved(trimesh.creation.box((0.17, 0.08, 0.04)), (0, 0, 0.012))

    def colour(p: np.ndarray) -> np.ndarray:
        x, y, z = p[:, 0], p[:, 1], p[:, 2]
        r = 0.5 + 0.4 * np.sin(x * y * 3000.0)
        g = 0.45 + 0.35 * np.cos(x * x * 900.0) * (z > 0)
        b = 0.4 + 0.3 * np.sin(y * y * 2500.0 + z * 60.0)
        return np.stack([r, g, b], 1)

    return trimesh.boolean.difference([outer, pocket], engine="manifold"), colour


def _can() -> tuple[trimesh.Trimesh, Callable]:
    """Continuous symmetry about z. Colour depends on z (and the radius) only; top and bottom differ."""
    body = trimesh.creation.cylinder(radius=0.033, height=0.12, sections=64)
    rim = _moved(trimesh.creation.cylinder(radius=0.028, height=0.01, sections=64), (0, 0, 0.063))

    def colour(p: np.ndarray) -> np.ndarray:
        z = p[:, 2]
        r = 0.55 + 0.4 * np.sin(z * 70.0)
        g = 0.35 + 0.3 * np.cos(z * 45.0 + 1.0)
        b = 0.3 + 0.25 * (z > 0.03)
        return np.stack([r, g, b], 1)

    return _union(body, rim), colour


@dataclass(frozen=True)
class DemoObject:
    obj_id: int
    name: str
    build: Callable[[], tuple[trimesh.Trimesh, Callable]]
    symmetry: str = "none"  # none | discrete_z180 | continuous_z


DEMO_OBJECTS = (
    DemoObject(1, "mug", _mug),
    DemoObject(2, "drill", _drill),
    DemoObject(3, "duck", _duck),
    DemoObject(4, "house", _house),
    DemoObject(5, "bracket", _bracket),
    DemoObject(6, "tray", _tray, "discrete_z180"),
    DemoObject(7, "can", _can, "continuous_z"),
)


def build_demo_mesh(obj: DemoObject) -> trimesh.Trimesh:
    """The coloured, subdivided, centred mesh of one demo object (metres)."""
    mesh, colour = obj.build()
    if obj.symmetry == "none":  # centre on the bounding box; symmetric ones are built centred on their axis
        lo, hi = mesh.bounds
        mesh.apply_translation(-(lo + hi) / 2)
    vertices, faces = trimesh.remesh.subdivide_to_size(mesh.vertices, mesh.faces, max_edge=MAX_EDGE)
    mesh = trimesh.Trimesh(vertices, faces, process=True)
    rgb = (np.clip(colour(np.asarray(mesh.vertices)), 0, 1) * 255).round().astype(np.uint8)
    mesh.visual = trimesh.visual.ColorVisuals(mesh, vertex_colors=np.c_[rgb, np.full(len(rgb), 255, np.uint8)])
    return mesh


def _info(obj: DemoObject, mesh: trimesh.Trimesh) -> ModelInfo:
    lo, hi = mesh.bounds
    discrete, continuous = [], []
    if obj.symmetry == "discrete_z180":
        discrete.append(np.diag([-1.0, -1.0, 1.0, 1.0]))
    elif obj.symmetry == "continuous_z":
        continuous.append(ContinuousSymmetry(np.array([0.0, 0.0, 1.0]), np.zeros(3)))
    return ModelInfo(obj.obj_id, mesh_diameter(mesh.vertices), lo, hi - lo, discrete, continuous)


def write_demo_objects(out_dir: str | Path) -> dict[int, ModelInfo]:
    """Write obj_XXXXXX.ply (millimetres, vertex colours and normals) and models_info.json to out_dir."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    infos = {}
    for obj in DEMO_OBJECTS:
        mesh = build_demo_mesh(obj)
        infos[obj.obj_id] = _info(obj, mesh)
        mm = mesh.copy()
        mm.apply_scale(1000.0)
        (out_dir / f"obj_{obj.obj_id:06d}.ply").write_bytes(
            trimesh.exchange.ply.export_ply(mm, encoding="binary", vertex_normal=True, include_attributes=False))
    write_models_info(out_dir / "models_info.json", infos)
    return infos
