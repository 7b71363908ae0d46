"""Object meshes in metres: loading (PLY/OBJ via trimesh), validation, sampling, diameter, 3D box."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import trimesh
from scipy.spatial import ConvexHull


class MeshError(ValueError):
    """A mesh file that cannot be used; the message names the file."""


@dataclass(frozen=True)
class ObjectMesh:
    """A triangle mesh in the object frame.

    vertices (V, 3) float32 [m]; faces (F, 3) int64, counter-clockwise seen from outside;
    vertex_colors (V, 3) float32 in [0, 1]; normals (V, 3) float32 unit;
    uv (V, 2) float32 and texture (H, W, 3) uint8 when the mesh is textured, else None.
    """

    vertices: np.ndarray
    faces: np.ndarray
    vertex_colors: np.ndarray
    normals: np.ndarray
    uv: np.ndarray | None = None
    texture: np.ndarray | None = None

    @property
    def diameter(self) -> float:
        """Largest distance between two vertices [m] (over the convex hull)."""
        return mesh_diameter(self.vertices)

    @property
    def bbox3d(self) -> tuple[np.ndarray, np.ndarray]:
        """(min (3,), size (3,)) of the axis-aligned box [m]."""
        lo, hi = self.vertices.min(0), self.vertices.max(0)
        return lo, hi - lo

    def sample_surface(self, n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """n points uniformly over the surface area and their face normals: (n, 3), (n, 3)."""
        return sample_surface(self.vertices, self.faces, n, seed)


def mesh_diameter(vertices: np.ndarray) -> float:
    """Largest pairwise distance [same unit as vertices]; exact, over convex-hull vertices."""
    pts = np.asarray(vertices, dtype=np.float64)
    if len(pts) > 4 and np.linalg.matrix_rank(pts - pts.mean(0), tol=1e-9) == 3:  # flat sets have no 3D hull
        pts = pts[ConvexHull(pts).vertices]
    d = np.linalg.norm(pts[:, None, :] - pts[None, :, :], axis=-1)
    return float(d.max())


def sample_surface(vertices: np.ndarray, faces: np.ndarray, n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Area-weighted uniform surface samples (n, 3) and the unit normals of their faces (n, 3)."""
    rng = np.random.default_rng(seed)
    tri = vertices[faces].astype(np.float64)
    cross = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    area = np.linalg.norm(cross, axis=1)
    idx = rng.choice(len(faces), size=n, p=area / area.sum())
    r1, r2 = rng.random(n), rng.random(n)
    s = np.sqrt(r1)
    bary = np.stack([1 - s, s * (1 - r2), s * r2], axis=1)
    pts = (tri[idx] * bary[:, :, None]).sum(1)
    normals = cross[idx] / np.maximum(area[idx, None], 1e-20)
    return pts.astype(np.float32), normals.astype(np.float32)


def farthest_point_sampling(points: np.ndarray, n: int, seed: int = 0) -> np.ndarray:
    """Indices (n,) of a farthest-point subset of points (N, 3), starting from a seeded random point."""
    N = len(points)
    if n >= N:
        return np.arange(N)
    rng = np.random.default_rng(seed)
    chosen = np.empty(n, dtype=np.int64)
    chosen[0] = rng.integers(N)
    dist = np.linalg.norm(points - points[chosen[0]], axis=1)
    for i in range(1, n):
        chosen[i] = int(dist.argmax())
        dist = np.minimum(dist, np.linalg.norm(points - points[chosen[i]], axis=1))
    return chosen


def validate_mesh(vertices: np.ndarray, faces: np.ndarray, source: str) -> None:
    """Raise MeshError naming ``source`` for meshes no renderer or metric can use."""
    if faces.ndim != 2 or faces.shape[1] != 3 or len(faces) == 0:
        raise MeshError(f"{source}: mesh has no triangle faces")
    if vertices.ndim != 2 or vertices.shape[1] != 3 or len(vertices) == 0:
        raise MeshError(f"{source}: mesh has no vertices")
    if not np.isfinite(vertices).all():
        raise MeshError(f"{source}: mesh has NaN or infinite vertex coordinates")
    if faces.min() < 0 or faces.max() >= len(vertices):
        raise MeshError(f"{source}: face indices outside [0, {len(vertices)})")


def load_mesh(path: str | Path, scale: float = 0.001) -> ObjectMesh:
    """Load a PLY/OBJ mesh, multiply coordinates by ``scale`` (BOP meshes are mm: 0.001 gives metres).

    Vertex colours come from the file when present (grey otherwise); textured meshes keep uv and texture.
    """
    path = Path(path)
    if not path.is_file():
        raise MeshError(f"{path}: mesh file not found")
    try:
        mesh = trimesh.load(path, force="mesh", process=False)
    except Exception as exc:  # trimesh raises many types for broken files
        raise MeshError(f"{path}: cannot be read as a mesh ({exc})") from exc
    vertices = np.asarray(mesh.vertices, dtype=np.float64) * scale
    faces = np.asarray(mesh.faces, dtype=np.int64).reshape(-1, 3) if len(mesh.faces) else np.zeros((0, 3), np.int64)
    validate_mesh(vertices, faces, str(path))
    uv = texture = None
    colors = np.full((len(vertices), 3), 0.7, dtype=np.float32)
    visual = mesh.visual
    if visual.kind == "texture" and getattr(visual, "uv", None) is not None and visual.material is not None:
        image = getattr(visual.material, "image", None) or getattr(visual.material, "baseColorTexture", None)
        if image is not None:
            uv = np.asarray(visual.uv, dtype=np.float32)
            texture = np.asarray(image.convert("RGB"), dtype=np.uint8)
    elif visual.kind == "vertex":
        colors = np.asarray(visual.vertex_colors, dtype=np.float32)[:, :3] / 255.0
    normals = np.asarray(mesh.vertex_normals, dtype=np.float32)
    return ObjectMesh(vertices.astype(np.float32), faces, colors.astype(np.float32), normals, uv, texture)
