"""Meshes, models_info with symmetries, the registry and the committed demo objects."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import REPO

from ros2_pose6d.objects import (
    MeshError,
    ModelsInfoError,
    ObjectRegistry,
    RegistryError,
    farthest_point_sampling,
    load_mesh,
    mesh_diameter,
    read_models_info,
    sample_surface,
    write_models_info,
)

DEMO = Path(REPO) / "models" / "demo"


def write_ply(path: Path, vertices: np.ndarray, faces: np.ndarray) -> None:
    lines = ["ply", "format ascii 1.0", f"element vertex {len(vertices)}", "property float x",
             "property float y", "property float z", f"element face {len(faces)}",
             "property list uchar int vertex_indices", "end_header"]
    lines += [" ".join(map(str, v)) for v in vertices] + [f"3 {a} {b} {c}" for a, b, c in faces]
    path.write_text("\n".join(lines) + "\n")


def test_committed_demo_objects_are_what_the_generator_writes(tmp_path):
    pytest.importorskip("manifold3d", reason="manifold3d (generator dependency) is not installed")
    from ros2_pose6d.objects.demo import write_demo_objects

    write_demo_objects(tmp_path)
    for f in sorted(DEMO.iterdir()):
        assert (tmp_path / f.name).read_bytes() == f.read_bytes(), f"{f.name} differs from a fresh generation"


def test_demo_objects_sizes_and_symmetries():
    reg = ObjectRegistry.from_bop_models(DEMO)
    assert len(reg) >= 6
    kinds = {"none": 0, "discrete": 0, "continuous": 0}
    for obj in reg:
        assert 0.05 <= obj.diameter <= 0.25, (obj.obj_id, obj.diameter)
        assert abs(mesh_diameter(obj.mesh.vertices) - obj.diameter) < 1e-6
        assert obj.mesh.vertex_colors.std(0).mean() > 0.05  # coloured, so pose is observable
        info = obj.info
        kinds["discrete" if info.symmetries_discrete else "continuous" if info.symmetries_continuous else "none"] += 1
    assert kinds["discrete"] >= 1 and kinds["continuous"] >= 1 and kinds["none"] >= 4


def test_symmetry_transforms_map_symmetric_meshes_onto_themselves():
    """Every symmetry of the demo tray / can maps each vertex to (near) another vertex of the same colour."""
    from scipy.spatial import cKDTree

    reg = ObjectRegistry.from_bop_models(DEMO)
    for obj in reg:
        if not obj.info.is_symmetric:
            continue
        v, c = obj.mesh.vertices.astype(np.float64), obj.mesh.vertex_colors
        tree = cKDTree(v)
        for S in obj.symmetries[1:: max(1, len(obj.symmetries) // 6)]:
            moved = v @ S[:3, :3].T + S[:3, 3]
            d, idx = tree.query(moved)
            assert np.median(d) < 0.004, (obj.name, np.median(d))
            assert np.median(np.abs(c[idx] - c).max(1)) < 0.08, obj.name


def test_models_info_round_trip_and_units(tmp_path):
    infos = read_models_info(DEMO / "models_info.json")
    write_models_info(tmp_path / "models_info.json", infos)
    again = read_models_info(tmp_path / "models_info.json")
    for k in infos:
        assert abs(infos[k].diameter - again[k].diameter) < 1e-9
        assert len(infos[k].symmetry_transforms()) == len(again[k].symmetry_transforms())
    raw = json.loads((DEMO / "models_info.json").read_text())
    assert abs(raw["1"]["diameter"] / 1000 - infos[1].diameter) < 1e-9  # mm in the file, m in memory


def test_discrete_symmetry_offsets_are_converted(tmp_path):
    entry = {"diameter": 100.0, "symmetries_discrete": [[-1, 0, 0, 10, 0, -1, 0, 20, 0, 0, 1, 0, 0, 0, 0, 1]],
             "symmetries_continuous": [{"axis": [0, 0, 2], "offset": [0, 0, 5]}]}
    (tmp_path / "models_info.json").write_text(json.dumps({"3": entry}))
    info = read_models_info(tmp_path / "models_info.json")[3]
    assert np.allclose(info.symmetries_discrete[0][:3, 3], [0.01, 0.02, 0])
    assert np.allclose(info.symmetries_continuous[0].axis, [0, 0, 1])
    T = info.symmetry_transforms(continuous_steps=4)
    assert T.shape == (8, 4, 4)  # (identity + 1 discrete) x (identity + 3 continuous)
    assert np.allclose(T[0], np.eye(4))


def test_models_info_without_diameter_names_the_file(tmp_path):
    path = tmp_path / "models_info.json"
    path.write_text(json.dumps({"1": {"min_x": 0}}))
    with pytest.raises(ModelsInfoError, match=r"models_info.json: object 1 has no 'diameter'"):
        read_models_info(path)


def test_mesh_without_faces_or_with_nan_names_the_file(tmp_path):
    empty = tmp_path / "empty.ply"
    write_ply(empty, np.zeros((3, 3)), np.zeros((0, 3), int))
    with pytest.raises(MeshError, match="empty.ply: mesh has no triangle faces"):
        load_mesh(empty)
    bad = tmp_path / "nan.ply"
    write_ply(bad, np.array([[0, 0, 0], [1, 0, 0], [float("nan"), 1, 0]]), np.array([[0, 1, 2]]))
    with pytest.raises(MeshError, match="nan.ply: mesh has NaN"):
        load_mesh(bad)
    with pytest.raises(MeshError, match="missing.ply: mesh file not found"):
        load_mesh(tmp_path / "missing.ply")


def test_load_mesh_converts_millimetres_and_reads_colours():
    mesh = load_mesh(DEMO / "obj_000001.ply")
    assert mesh.vertices.max() < 0.2  # metres
    assert mesh.vertex_colors.min() >= 0 and mesh.vertex_colors.max() <= 1


def test_surface_sampling_and_farthest_points():
    # unit square in the z = 0 plane, two triangles: samples cover it uniformly
    v = np.array([[0, 0, 0], [1, 0, 0], [1, 1, 0], [0, 1, 0]], np.float32)
    f = np.array([[0, 1, 2], [0, 2, 3]])
    pts, normals = sample_surface(v, f, 20000, seed=1)
    assert abs(pts[:, 0].mean() - 0.5) < 0.01 and abs(pts[:, 1].mean() - 0.5) < 0.01
    assert np.allclose(np.abs(normals[:, 2]), 1)
    grid = np.array([[x, y, 0] for x in range(5) for y in range(5)], float)
    idx = farthest_point_sampling(grid, 4, seed=0)
    chosen = {tuple(grid[i][:2]) for i in idx[1:]}
    assert len(set(idx)) == 4 and chosen & {(0, 0), (0, 4), (4, 0), (4, 4)}


def test_registry_from_yaml(tmp_path):
    cfg = {"models_dir": str(DEMO), "objects": [{"id": 2, "name": "drill"}, {"id": 7, "name": "can"}]}
    (tmp_path / "objects.yaml").write_text(yaml.safe_dump(cfg))
    reg = ObjectRegistry.from_yaml(tmp_path / "objects.yaml")
    assert reg.ids == [2, 7] and reg[7].name == "can" and reg.index(7) == 1
    assert len(reg[7].symmetries) == 36
    cfg["objects"].append({"id": 99, "name": "ghost"})
    (tmp_path / "objects.yaml").write_text(yaml.safe_dump(cfg))
    with pytest.raises(RegistryError, match="object 99 has no entry"):
        ObjectRegistry.from_yaml(tmp_path / "objects.yaml")


def test_shipped_objects_yaml_loads():
    reg = ObjectRegistry.from_yaml(Path(REPO) / "config" / "objects.yaml")
    assert len(reg) == 7
