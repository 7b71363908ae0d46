"""Render synthetic BOP scenes: several objects with mutual occlusion, distractors, random lighting,
procedural backgrounds and image degradations. Deterministic per (seed, image index), so a dataset
comes out identical whether made by one process or by many."""

from __future__ import annotations

import multiprocessing as mp
import shutil
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
from ros2_pose6d.training.synth.backgrounds import random_background
from ros2_pose6d.training.synth.config import SynthConfig
from ros2_pose6d.training.synth.distractors import CLASSIC_COUNT, make_distractors
from ros2_pose6d.training.synth.poses import sample_poses
from ros2_pose6d.training.synth.table import (
    place_on_table,
    random_rotation,
    resting_rotation,
    table_camera,
    table_surface,
)
from tqdm import tqdm

from ros2_pose6d.io.bop_writer import GtRecord, SceneAnnotations, mask_bbox, write_frame_files
from ros2_pose6d.objects.registry import ObjectRegistry
from ros2_pose6d.render.rasterize import RasterSettings
from ros2_pose6d.render.renderer import Lighting, MeshRenderer

NUM_DISTRACTOR_MESHES = CLASSIC_COUNT  # occluders draw from these (so old seeds give the same images)
NUM_BACKGROUND_MESHES = 32  # background clutter draws from all 32


@dataclass
class Sample:
    """One rendered image with its annotations. rgb (H, W, 3) uint8; depth (H, W) [m] (0 background);
    masks / masks_visib: per instance (H, W) bool (full silhouette / visible part)."""

    rgb: np.ndarray
    depth: np.ndarray
    K: np.ndarray
    records: list[GtRecord]
    masks: list[np.ndarray]
    masks_visib: list[np.ndarray]


class SceneContext:
    """Meshes of the object set plus distractors on one renderer (built once per worker process)."""

    def __init__(self, registry: ObjectRegistry, seed: int = 0) -> None:
        self.registry = registry
        meshes = [o.mesh for o in registry]
        self.radii = np.array([np.linalg.norm(m.vertices, axis=1).max() for m in meshes])  # about the origin
        self.num_objects = len(meshes)
        distractors = make_distractors(seed, NUM_BACKGROUND_MESHES)
        self.vertices = [np.asarray(m.vertices, np.float64) for m in meshes + distractors]  # for resting heights
        self.renderer = MeshRenderer(meshes + distractors)


def _camera(rng: np.random.Generator, cfg: SynthConfig) -> np.ndarray:
    f = rng.uniform(*cfg.focal)
    cx = (cfg.width - 1) / 2 + rng.uniform(-cfg.principal_jitter, cfg.principal_jitter)
    cy = (cfg.height - 1) / 2 + rng.uniform(-cfg.principal_jitter, cfg.principal_jitter)
    return np.array([[f, 0, cx], [0, f, cy], [0, 0, 1]])


def _degrade(rng: np.random.Generator, img: np.ndarray, cfg: SynthConfig) -> np.ndarray:
    """Colour jitter, blur and noise on a float (H, W, 3) image in [0, 1] -> uint8."""
    img = img * (1 + rng.uniform(-cfg.brightness, cfg.brightness))
    mean = img.mean()
    img = (img - mean) * (1 + rng.uniform(-cfg.contrast, cfg.contrast)) + mean
    grey = img.mean(-1, keepdims=True)
    img = grey + (img - grey) * (1 + rng.uniform(-cfg.saturation, cfg.saturation))
    if rng.random() < cfg.blur_prob:
        img = cv2.GaussianBlur(img.astype(np.float32), (0, 0), rng.uniform(*cfg.blur_sigma))
    img = img * 255 + rng.normal(0, rng.uniform(*cfg.noise_sigma), img.shape)
    return np.clip(np.round(img), 0, 255).astype(np.uint8)


def _free_scene(ctx: SceneContext, cfg: SynthConfig, rng: np.random.Generator, K: np.ndarray,
                obj_indices: np.ndarray, R: np.ndarray | None, t: np.ndarray | None):
    """Free layout: object poses (unless given), distractors and background shapes as (R, t, distractor mesh
    indices, their R (scale folded in), their t)."""
    h, w = cfg.height, cfg.width
    if R is None or t is None:
        R, t = sample_poses(rng, ctx.radii[obj_indices], K, (h, w), cfg.distance, cfg.elevation, cfg.border,
                            cfg.min_separation)
    # distractors: random primitives between the camera and the objects or beside them
    n_dis = int(rng.integers(cfg.distractors[0], cfg.distractors[1] + 1))
    d_idx = ctx.num_objects + rng.integers(0, NUM_DISTRACTOR_MESHES, n_dis)
    d_size = rng.uniform(*cfg.distractor_size, n_dis)
    d_R, d_t = sample_poses(rng, d_size, K, (h, w), (cfg.distance[0] * 0.6, cfg.distance[1]), (-90, 90), 0.0, 0.0)
    d_R = d_R * d_size[:, None, None]  # uniform scale folded into the "rotation": the renderer only multiplies
    if cfg.background_shapes[1] > 0:  # drawn only when on: datasets made without it stay the same per seed
        n_bg = int(rng.integers(cfg.background_shapes[0], cfg.background_shapes[1] + 1))
        bg_size = rng.uniform(*cfg.background_shape_size, n_bg)
        bg_R, bg_t = sample_poses(rng, bg_size, K, (h, w), (cfg.distance[1], 1.8 * cfg.distance[1]), (-90, 90),
                                  -0.1, 0.0)
        d_idx = np.concatenate([d_idx, ctx.num_objects + rng.integers(0, NUM_BACKGROUND_MESHES, n_bg)])
        d_R = np.concatenate([d_R, bg_R * bg_size[:, None, None]])
        d_t = np.concatenate([d_t, bg_t])
    return R, t, d_idx, d_R, d_t


def _table_scene(ctx: SceneContext, cfg: SynthConfig, rng: np.random.Generator, K: np.ndarray,
                 obj_indices: np.ndarray):
    """Table layout: a camera above a table, the objects resting on it (mostly upright), distractors lying
    among them and background shapes around them on the same plane. Returns (object indices, R, t,
    distractor mesh indices, their R (scale folded in), their t, (camera, table top)). Crowded objects stay
    (one is lost only when none of its drawn pixels sees the table); crowded distractors and shapes go."""
    hw = (cfg.height, cfg.width)
    cam = table_camera(rng, cfg.distance, cfg.table_elevation, cfg.table_roll)
    taken: list = []  # footprints on the plane
    rotations = [resting_rotation(rng, cfg.upright_prob, cfg.upright_tilt) for _ in obj_indices]
    kept, R, t = place_on_table(rng, cam, K, hw, [ctx.vertices[i] for i in obj_indices], rotations, cfg.border,
                                cfg.min_separation, taken, 1.5 * cfg.distance[1])
    obj_indices = obj_indices[kept]  # an object is only lost when no drawn pixel sees the table
    d_idx, d_R, d_t = [np.zeros(0, np.int64)], [np.zeros((0, 3, 3))], [np.zeros((0, 3))]
    groups = [(int(rng.integers(cfg.distractors[0], cfg.distractors[1] + 1)), NUM_DISTRACTOR_MESHES,
               cfg.distractor_size, cfg.border, 0.0, 1.5 * cfg.distance[1])]
    if cfg.background_shapes[1] > 0:  # clutter beside and behind the objects, on the plane, anywhere in view
        groups.append((int(rng.integers(cfg.background_shapes[0], cfg.background_shapes[1] + 1)),
                       NUM_BACKGROUND_MESHES, cfg.background_shape_size, -0.1, 0.8 * cam.t[2], 3.0 * cfg.distance[1]))
    for count, num_meshes, size_range, border, min_range, max_range in groups:
        meshes = ctx.num_objects + rng.integers(0, num_meshes, count)
        sizes = rng.uniform(*size_range, count)
        rotations = [random_rotation(rng) for _ in range(count)]
        kept, R_d, t_d = place_on_table(rng, cam, K, hw, [ctx.vertices[m] * s for m, s in zip(meshes, sizes)],
                                        rotations, border, cfg.min_separation, taken, max_range, min_range,
                                        keep_crowded=False)
        d_idx.append(meshes[kept])
        d_R.append(R_d * sizes[kept, None, None])  # uniform scale folded into the "rotation"
        d_t.append(t_d)
    top = table_surface(rng, cam, K, hw, cfg.table_size, cfg.marker_prob)
    return obj_indices, R, t, np.concatenate(d_idx), np.concatenate(d_R), np.concatenate(d_t), (cam, top)


def render_sample(ctx: SceneContext, cfg: SynthConfig, rng: np.random.Generator, K: np.ndarray | None = None,
                  obj_indices: np.ndarray | None = None, R: np.ndarray | None = None,
                  t: np.ndarray | None = None) -> Sample:
    """Render one image. Objects (indices into the registry), poses and K are drawn from ``rng`` unless
    given (the demo sequence gives them to move a camera through a fixed scene; layout 'free' only)."""
    h, w = cfg.height, cfg.width
    K = _camera(rng, cfg) if K is None else np.asarray(K, np.float64)
    if obj_indices is None:
        n = int(rng.integers(cfg.objects_per_image[0], cfg.objects_per_image[1] + 1))
        obj_indices = rng.choice(ctx.num_objects, size=n, replace=cfg.allow_repeats or n > ctx.num_objects)
    obj_indices = np.asarray(obj_indices, np.int64)
    table = None
    if cfg.layout == "table":
        if R is not None or t is not None:
            raise ValueError("the table layout draws its own poses; render given poses with layout 'free'")
        obj_indices, R, t, d_idx, d_R, d_t, table = _table_scene(ctx, cfg, rng, K, obj_indices)
    else:
        R, t, d_idx, d_R, d_t = _free_scene(ctx, cfg, rng, K, obj_indices, R, t)
    n_obj = len(obj_indices)
    mesh_idx = torch.as_tensor(np.concatenate([obj_indices, d_idx]))
    Rs = torch.as_tensor(np.concatenate([R, d_R]), dtype=torch.float32)
    ts = torch.as_tensor(np.concatenate([t, d_t]), dtype=torch.float32)
    direction = np.array([rng.uniform(-1, 1), rng.uniform(-1, 1), rng.uniform(0.3, 1.5)])
    light = Lighting(tuple(direction / np.linalg.norm(direction)), rng.uniform(*cfg.ambient), rng.uniform(*cfg.diffuse))
    settings = RasterSettings(h, w)
    Kt = torch.as_tensor(K, dtype=torch.float32)[None]
    with torch.no_grad():
        one_image = torch.zeros(len(mesh_idx), dtype=torch.long)
        full = ctx.renderer.render(mesh_idx, Rs, ts, Kt, settings, image_idx=one_image, lighting=light)
        alone = ctx.renderer.render(mesh_idx[:n_obj], Rs[:n_obj], ts[:n_obj], Kt.expand(n_obj, 3, 3), settings,
                                    shade=False)
    colour = full.color[0].numpy()
    mask_any = full.mask[0].numpy()
    background = random_background(rng, h, w, cfg.marker_prob if table is None else 0.0)
    if table is not None:  # the table top, Lambert-shaded by the scene's light, in front of the background
        cam, top = table
        up = cam.R[:, 2]  # the table's normal in the camera frame
        shade = light.ambient + light.diffuse * max(0.0, -float(up @ np.asarray(light.direction)))
        background = np.where(top.seen[..., None], top.image * shade, background)
    rgb = _degrade(rng, np.where(mask_any[..., None], colour, background), cfg)
    instance = full.instance[0].numpy()
    records, masks, masks_visib = [], [], []
    for i in range(n_obj):
        m_full = alone.mask[i].numpy()
        m_vis = instance == i
        masks.append(m_full)
        masks_visib.append(m_vis)
        records.append(GtRecord(ctx.registry.objects[int(obj_indices[i])].obj_id, np.asarray(R[i]), np.asarray(t[i]),
                                mask_bbox(m_full), mask_bbox(m_vis), int(m_full.sum()), int(m_vis.sum())))
    return Sample(rgb, full.depth[0].numpy(), K, records, masks, masks_visib)


# ---- dataset generation (parallel workers) ----

_WORKER: dict = {}


def _init_worker(registry: ObjectRegistry, cfg: SynthConfig, seed: int, root: str, single_thread: bool = True) -> None:
    if single_thread:  # worker processes share the cores; one thread each
        torch.set_num_threads(1)
    _WORKER.update(ctx=SceneContext(registry, seed), cfg=cfg, seed=seed, root=Path(root))


def _make_image(index: int) -> tuple[int, int, np.ndarray, list[GtRecord]]:
    ctx, cfg, seed, root = _WORKER["ctx"], _WORKER["cfg"], _WORKER["seed"], _WORKER["root"]
    rng = np.random.default_rng([seed, index])
    sample = render_sample(ctx, cfg, rng)
    scene_id, im_id = divmod(index, cfg.images_per_scene)
    write_frame_files(root / f"{scene_id:06d}", im_id, sample.rgb, sample.depth, sample.masks, sample.masks_visib,
                      jpeg=cfg.jpeg)
    return scene_id, im_id, sample.K, sample.records


class GenerationError(RuntimeError):
    """Dataset generation that cannot start or did not finish; nothing is left at the output path."""


def generate_dataset(registry: ObjectRegistry, out_dir: str | Path, num_images: int, cfg: SynthConfig | None = None,
                     seed: int = 0, workers: int = 1, progress: bool = True, overwrite: bool = False) -> Path:
    """Render ``num_images`` into a BOP split folder ``out_dir`` (scenes 000000, 000001, ...).

    Work happens in ``out_dir`` + ".partial" and is renamed at the end, so an interrupted run leaves no
    half-written dataset behind at ``out_dir``. ``workers`` > 1 renders in that many processes; the
    result is identical to one process.
    """
    cfg = cfg or SynthConfig()
    out_dir = Path(out_dir)
    if num_images < 1:
        raise GenerationError(f"num_images must be >= 1, got {num_images}")
    if out_dir.exists() and any(out_dir.iterdir()) and not overwrite:
        raise GenerationError(f"{out_dir} exists and is not empty (pass overwrite to replace it)")
    for obj in registry:  # fail before any work when a mesh is missing or broken
        obj.mesh  # noqa: B018
    tmp = out_dir.with_name(out_dir.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    scenes: dict[int, SceneAnnotations] = {}
    try:
        bar = tqdm(total=num_images, desc="generate", unit="img", disable=not progress)
        if workers <= 1:
            _init_worker(registry, cfg, seed, str(tmp), single_thread=False)
            results = map(_make_image, range(num_images))
            pool = None
        else:
            pool = mp.get_context("spawn").Pool(workers, _init_worker, (registry, cfg, seed, str(tmp)))
            results = pool.imap_unordered(_make_image, range(num_images), chunksize=4)
        try:
            for scene_id, im_id, K, records in results:
                scenes.setdefault(scene_id, SceneAnnotations(tmp / f"{scene_id:06d}")).add(im_id, K, records)
                bar.update()
        finally:
            bar.close()
            if pool is not None:
                pool.terminate()
        for ann in scenes.values():
            ann.write()
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if out_dir.exists():
        shutil.rmtree(out_dir)
    tmp.rename(out_dir)
    return out_dir
