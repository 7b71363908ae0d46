"""Mesh simplification by vertex clustering on a voxel grid (NeMo's neural meshes want about 1,000
vertices). Needs no extra package; the cell size is searched so the vertex count lands near the target."""

from __future__ import annotations

import numpy as np

from ros2_pose6d.objects.mesh import ObjectMesh


def _cluster(mesh: ObjectMesh, cell: float) -> ObjectMesh:
    keys = np.floor((mesh.vertices - mesh.vertices.min(0)) / cell).astype(np.int64)
    _, inverse, counts = np.unique(keys, axis=0, return_inverse=True, return_counts=True)
    inverse = inverse.reshape(-1)
    n = len(counts)
    mean = lambda a: np.stack([np.bincount(inverse, a[:, k], n) for k in range(a.shape[1])], 1) / counts[:, None]  # noqa: E731
    verts = mean(mesh.vertices.astype(np.float64)).astype(np.float32)
    colours = mean(mesh.vertex_colors.astype(np.float64)).astype(np.float32)
    faces = inverse[mesh.faces]
    keep = (faces[:, 0] != faces[:, 1]) & (faces[:, 1] != faces[:, 2]) & (faces[:, 0] != faces[:, 2])
    faces = np.unique(faces[keep], axis=0)
    normals = np.zeros_like(verts, dtype=np.float64)
    tri = verts[faces].astype(np.float64)
    fn = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    for k in range(3):
        np.add.at(normals, faces[:, k], fn)
    normals /= np.linalg.norm(normals, axis=1, keepdims=True).clip(1e-12)
    return ObjectMesh(verts, faces.astype(np.int64), colours, normals.astype(np.float32))


def simplify_mesh(mesh: ObjectMesh, target_vertices: int = 1000) -> ObjectMesh:
    """A mesh with about ``target_vertices`` vertices (never more than the input), same frame and units."""
    if len(mesh.vertices) <= target_vertices:
        return mesh
    extent = float(np.ptp(mesh.vertices, axis=0).max())
    lo, hi = extent / 1000, extent / 2
    best = _cluster(mesh, hi)
    for _ in range(20):  # geometric bisection on the cell size
        mid = np.sqrt(lo * hi)
        m = _cluster(mesh, mid)
        if len(m.vertices) > target_vertices:
            lo = mid
        else:
            hi, best = mid, m
        if abs(len(best.vertices) - target_vertices) < 0.05 * target_vertices:
            break
    return best
