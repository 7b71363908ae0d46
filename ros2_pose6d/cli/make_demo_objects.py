"""``pose6d-make-demo-objects``: regenerate the demo object set (BOP layout) into a folder."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="pose6d-make-demo-objects", description=__doc__)
    parser.add_argument("out", type=Path, nargs="?", default=Path("models/demo"), help="output folder")
    args = parser.parse_args(argv)
    try:
        from ros2_pose6d.objects.demo import write_demo_objects
    except ImportError as exc:
        print(f"pose6d-make-demo-objects: needs manifold3d (pip install manifold3d): {exc}", file=sys.stderr)
        return 2
    infos = write_demo_objects(args.out)
    for obj_id, info in infos.items():
        print(f"obj_{obj_id:06d}: diameter {info.diameter * 100:.1f} cm, symmetric: {info.is_symmetric}")
    print(f"wrote {len(infos)} objects and models_info.json to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
