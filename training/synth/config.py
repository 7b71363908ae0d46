"""What a synthetic dataset looks like: camera, object placement, clutter and image degradations."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class SynthConfig:
    """All lengths in metres, angles in degrees, sizes in pixels.

    Each image shows ``objects_per_image`` objects drawn from the set (instances of one object may
    repeat when ``allow_repeats``), at distances in ``distance`` from the camera, seen from elevations in
    ``elevation`` above the object's xy plane (90 = from +z), with ``distractors`` random primitive shapes
    as occluders, random Lambert lighting, a procedural background (optionally with ``background_shapes``
    shaded 3D primitives in front of it and a fiducial board) and jitter/blur/noise. With ``layout``
    "table" the objects instead rest on a textured table plane under a camera looking down at it.
    """

    height: int = 480
    width: int = 640
    focal: tuple[float, float] = (560.0, 600.0)  # fx = fy drawn per image in this range
    principal_jitter: float = 8.0  # principal point = image centre +- this
    objects_per_image: tuple[int, int] = (3, 6)
    allow_repeats: bool = True
    distance: tuple[float, float] = (0.45, 1.0)
    elevation: tuple[float, float] = (-30.0, 90.0)
    min_separation: float = 0.6  # centre distance >= this * (r_i + r_j), bounding-sphere radii
    border: float = 0.08  # projected centres stay this fraction of the image size away from the edges
    distractors: tuple[int, int] = (1, 4)
    distractor_size: tuple[float, float] = (0.03, 0.12)
    # 3D clutter behind the objects (shaded primitives at 1-1.8x the far distance): real backgrounds are full
    # of shaded things that look like objects, which flat procedural backgrounds never show. 0 = off.
    background_shapes: tuple[int, int] = (0, 0)
    background_shape_size: tuple[float, float] = (0.05, 0.3)
    marker_prob: float = 0.0  # chance of a board of fiducial-like black/white squares on the background
    # "free": objects float at any orientation in front of the background (viewpoints from ``elevation``).
    # "table": they rest on a textured table seen from ``table_elevation`` above it, the camera
    # ``distance`` from the look-at point; distractors and background shapes rest on the plane too, and
    # the marker board lies on the table. Both draw from the same seeds but give different images. The table
    # top is background, as the procedural one is: depth 0 there.
    layout: str = "free"
    table_elevation: tuple[float, float] = (15.0, 80.0)  # camera above the table plane [deg]
    table_roll: float = 45.0  # camera roll about its axis, +- [deg]
    table_size: tuple[float, float] = (1.0, 3.0)  # side of the square table top [m]
    upright_prob: float = 0.85  # share of objects standing with the model's +z up (the rest lie any way)
    upright_tilt: float = 10.0  # an upright object leans by up to this [deg]
    ambient: tuple[float, float] = (0.25, 0.7)
    diffuse: tuple[float, float] = (0.3, 0.8)
    brightness: float = 0.2  # +- factor
    contrast: float = 0.2
    saturation: float = 0.3
    blur_prob: float = 0.3
    blur_sigma: tuple[float, float] = (0.5, 1.5)
    noise_sigma: tuple[float, float] = (0.0, 6.0)  # Gaussian pixel noise, uint8 levels
    images_per_scene: int = 500
    jpeg: bool = False  # write rgb as .jpg (smaller) instead of .png

    def __post_init__(self) -> None:
        if self.height <= 0 or self.width <= 0:
            raise ValueError(f"image size must be positive, got {self.height}x{self.width}")
        for name in ("objects_per_image", "distance", "elevation", "distractors", "focal", "background_shapes",
                     "background_shape_size", "table_elevation", "table_size"):
            lo, hi = getattr(self, name)
            if lo > hi:
                raise ValueError(f"{name}: lower bound {lo} is above upper bound {hi}")
        if self.objects_per_image[0] < 1:
            raise ValueError("objects_per_image must start at 1 or more")
        if self.distance[0] <= 0.05:
            raise ValueError("distance must stay beyond 5 cm (the near plane)")
        if not 0.0 <= self.marker_prob <= 1.0:
            raise ValueError(f"marker_prob must be in [0, 1], got {self.marker_prob}")
        if self.layout not in ("free", "table"):
            raise ValueError(f"layout must be 'free' or 'table', got {self.layout!r}")
        if not 0.0 < self.table_elevation[0] <= self.table_elevation[1] <= 90.0:
            raise ValueError(f"table_elevation must lie in (0, 90] (a camera above the table), "
                             f"got {self.table_elevation}")
        if not 0.0 <= self.upright_prob <= 1.0:
            raise ValueError(f"upright_prob must be in [0, 1], got {self.upright_prob}")
        if self.table_size[0] <= 0:
            raise ValueError(f"table_size must be positive, got {self.table_size}")
        for name in ("table_roll", "upright_tilt"):
            if not 0.0 <= getattr(self, name) <= 180.0:
                raise ValueError(f"{name} must be an angle in [0, 180] degrees, got {getattr(self, name)}")
        if self.images_per_scene < 1:
            raise ValueError("images_per_scene must be >= 1")
