"""``pose6d-bop2bag``: a BOP scene (e.g. LM-O test/000002) as a ROS 2 bag: rgb8 images, camera_info and
the ground truth as an ObjectPoseArray on /gt/poses, stamped at --fps."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from tqdm import tqdm

from ros2_pose6d.estimation.types import PoseEstimate
from ros2_pose6d.io.bag import CAMERA_INFO, IMAGE, POSES, BagError, BagWriter
from ros2_pose6d.io.bop import BopError, BopScene
from ros2_pose6d.io.ros_convert import K_to_camera_info, array_to_image, estimates_to_array, header, rosbags_factory

TOPICS = {"image": "/camera/color/image_raw", "info": "/camera/color/camera_info", "gt": "/gt/poses"}


def bop_to_bag(scene_dir: Path, out: Path, fps: float = 10.0, frame_id: str = "camera_color_optical_frame",
               storage: str = "sqlite3", distro: str = "humble", max_frames: int | None = None,
               progress: bool = True) -> int:
    """Write the bag; returns the number of frames."""
    scene = BopScene(scene_dir, load_rgb=True, load_depth=False)
    ids = scene.im_ids[:max_frames]
    with BagWriter(out, storage, distro) as w:
        f = rosbags_factory(w.store)
        for k, im_id in enumerate(tqdm(ids, desc="bop2bag", unit="frame", disable=not progress)):
            bf = scene.frame(im_id)
            stamp = k / fps
            hdr = header(f, stamp, frame_id)
            w.write(TOPICS["image"], IMAGE, stamp, array_to_image(f, bf.rgb, "rgb8", hdr))
            w.write(TOPICS["info"], CAMERA_INFO, stamp, K_to_camera_info(f, bf.K, bf.rgb.shape[:2], hdr))
            counts: dict[int, int] = {}
            gts = []
            for g in bf.gt:
                inst = counts.get(g.obj_id, 0)
                counts[g.obj_id] = inst + 1
                box = np.zeros(4) if g.bbox_visib is None else np.array(
                    [g.bbox_visib[0], g.bbox_visib[1], g.bbox_visib[0] + g.bbox_visib[2],
                     g.bbox_visib[1] + g.bbox_visib[3]], float)
                gts.append(PoseEstimate(g.obj_id, g.R, g.t, 1.0, inst, box,
                                        1.0 if g.visib_fract is None else g.visib_fract))
            w.write(TOPICS["gt"], POSES, stamp, estimates_to_array(f, hdr, gts))
    return len(ids)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="pose6d-bop2bag", description=__doc__)
    p.add_argument("scene", type=Path, help="BOP scene folder (with rgb/, scene_camera.json, scene_gt.json)")
    p.add_argument("out", type=Path, help="output bag folder (must not exist)")
    p.add_argument("--fps", type=float, default=10.0)
    p.add_argument("--storage", choices=("sqlite3", "mcap"), default="sqlite3")
    p.add_argument("--distro", choices=("humble", "jazzy"), default="humble")
    p.add_argument("--max-frames", type=int)
    args = p.parse_args(argv)
    try:
        n = bop_to_bag(args.scene, args.out, args.fps, storage=args.storage, distro=args.distro,
                       max_frames=args.max_frames)
    except (BopError, BagError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {n} frames to {args.out} ({', '.join(TOPICS.values())})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
