"""Distractor shapes: random coloured primitives that occlude the objects and clutter the image."""

from __future__ import annotations

import numpy as np
import trimesh

from ros2_pose6d.objects.mesh import ObjectMesh

CLASSIC_COUNT = 12  # the first meshes of a seed, made as before the blobs came (old datasets regenerate)


def make_distractors(seed: int, count: int = CLASSIC_COUNT) -> list[ObjectMesh]:
    """``count`` primitive meshes (boxes, cylinders, spheres, capsules, cones) of unit-ish size with
    random per-vertex colour patterns; scaled per use by the pose sampler's size draw. Meshes after the
    first ``CLASSIC_COUNT`` also include lumpy blobs and speckled colours."""
    rng = np.random.default_rng(seed)
    makers = (
        lambda: trimesh.creation.box(extents=rng.uniform(0.4, 1.0, 3)),
        lambda: trimesh.creation.cylinder(radius=rng.uniform(0.2, 0.5), height=rng.uniform(0.5, 1.0), sections=24),
        lambda: trimesh.creation.icosphere(subdivisions=2, radius=0.5),
        lambda: trimesh.creation.capsule(height=rng.uniform(0.3, 0.6), radius=0.25, count=[12, 12]),
        lambda: trimesh.creation.cone(radius=0.4, height=rng.uniform(0.5, 1.0), sections=24),
    )

    def blob() -> trimesh.Trimesh:  # a lumpy, stone- or toy-like shape
        m = trimesh.creation.icosphere(subdivisions=3, radius=0.5)
        d = np.asarray(m.vertices) / 0.5
        bumps = sum(rng.uniform(0.05, 0.25) * np.sin(rng.uniform(1, 4) * d @ rng.normal(size=3) + rng.uniform(0, 6))
                    for _ in range(4))
        m.vertices = d * (0.5 + 0.4 * bumps)[:, None] * rng.uniform(0.5, 1.0, 3)
        return m

    meshes = []
    for i in range(count):
        m = (makers + (blob,))[i % (len(makers) + 1)]() if i >= CLASSIC_COUNT else makers[i % len(makers)]()
        v = np.asarray(m.vertices, np.float32)
        v -= v.mean(0)
        v /= np.linalg.norm(v, axis=1).max()  # bounding radius 1: scaled at render time
        base, other = rng.random(3), rng.random(3)
        freq = rng.uniform(2, 8)
        stripes = (np.sin(freq * np.pi * v[:, int(rng.integers(3))]) > 0)[:, None]
        colours = np.where(stripes, base, other).astype(np.float32)
        if i >= CLASSIC_COUNT and rng.random() < 0.5:  # speckled: per-vertex mix of the two colours
            colours = (base + (other - base) * rng.random((len(v), 1))).astype(np.float32)
        normals = np.asarray(m.vertex_normals, np.float32)
        meshes.append(ObjectMesh(v, np.asarray(m.faces, np.int64), colours, normals))
    return meshes
