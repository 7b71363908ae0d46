"""ament_python package `ros2_pose6d`, plus the torch extension `ros2_pose6d._C` built from csrc/.

Environment switches:
  ROS2_POSE6D_NO_EXT=1        do not build the extension (pure-PyTorch references are used).
  ROS2_POSE6D_REQUIRE_EXT=1   a failed extension build fails the install (CI uses this).
  FORCE_CUDA=1                build the CUDA kernels even when torch sees no GPU (needs nvcc + CUDA torch).
A failed or skipped build never fails the install otherwise: it prints one line and the package
falls back to the reference implementations at run time.
"""

import glob
import os
import sys
from pathlib import Path
from typing import ClassVar

from setuptools import find_packages, setup

PACKAGE = "ros2_pose6d"
ROOT = Path(__file__).resolve().parent


def _data_files() -> list[tuple[str, list[str]]]:
    """launch/, config/ and models/ under share/ros2_pose6d, keeping their folder layout."""
    share = f"share/{PACKAGE}"
    files = [
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
        (share, ["package.xml"]),
    ]
    for top in ("launch", "config", "models", "ros2_pose6d_msgs/msg"):
        for path in sorted(glob.glob(f"{top}/**/*", recursive=True)):
            if os.path.isfile(path):
                files.append((f"{share}/{os.path.dirname(path)}", [path]))
    return files


def _extension_setup() -> tuple[list, dict]:
    """Return (ext_modules, cmdclass) for ros2_pose6d._C, or empty ones with a reason printed."""
    if os.environ.get("ROS2_POSE6D_NO_EXT") == "1":
        print("ros2_pose6d: ROS2_POSE6D_NO_EXT=1, skipping the C++/CUDA extension.")
        return [], {}
    try:
        import torch
        from torch.utils.cpp_extension import CUDA_HOME, BuildExtension, CppExtension, CUDAExtension
    except ImportError:
        print("ros2_pose6d: torch is not importable at build time, skipping the extension "
              "(install torch first and build with --no-build-isolation).")
        return [], {}

    cpu_sources = ["csrc/ext.cpp", *sorted(glob.glob("csrc/*/*_cpu.cpp"))]
    cuda_sources = sorted(glob.glob("csrc/*/*.cu")) + sorted(glob.glob("csrc/*/*_cuda.cpp"))
    with_cuda = (torch.version.cuda is not None and CUDA_HOME is not None
                 and (torch.cuda.is_available() or os.environ.get("FORCE_CUDA") == "1"))
    cxx_flags = ["-O3", "-std=c++17"]
    extra = {"cxx": cxx_flags}
    if with_cuda:
        extra["nvcc"] = ["-O3", "-std=c++17", "--expt-relaxed-constexpr", "-lineinfo"]
        ext = CUDAExtension(f"{PACKAGE}._C", cpu_sources + cuda_sources, include_dirs=[str(ROOT / "csrc")],
                            define_macros=[("WITH_CUDA", None)], extra_compile_args=extra)
    else:
        ext = CppExtension(f"{PACKAGE}._C", cpu_sources, include_dirs=[str(ROOT / "csrc")],
                           extra_compile_args=extra)
    if sys.platform.startswith("linux"):
        extra["cxx"].append("-fopenmp")
        ext.extra_link_args.append("-fopenmp")

    class TolerantBuildExtension(BuildExtension):
        """A failed compile prints one line and leaves the pure-PyTorch fallback in place."""

        failed: ClassVar[set[str]] = set()  # names of extensions whose build failed

        def build_extension(self, extension):
            try:
                super().build_extension(extension)
            except Exception as exc:
                if os.environ.get("ROS2_POSE6D_REQUIRE_EXT") == "1":
                    raise
                self.failed.add(extension.name)
                reason = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
                print(f"ros2_pose6d: could not build the C++ extension ({reason}); "
                      "the pure-PyTorch reference ops will be used.", file=sys.stderr)

        def copy_extensions_to_source(self):
            built = self.extensions
            self.extensions = [e for e in built if e.name not in self.failed]
            try:
                super().copy_extensions_to_source()
            finally:
                self.extensions = built

        def get_outputs(self):
            return [path for path in super().get_outputs() if os.path.exists(path)]

    return [ext], {"build_ext": TolerantBuildExtension.with_options(use_ninja=True)}


ext_modules, cmdclass = _extension_setup()

setup(
    name=PACKAGE,
    version="0.1.0",
    packages=find_packages(include=[PACKAGE, f"{PACKAGE}.*"]) + [f"{PACKAGE}.training"],
    package_dir={f"{PACKAGE}.training": "training"},
    package_data={PACKAGE: ["io/msg/*.msg"], f"{PACKAGE}.training": ["configs/*.yaml"]},
    data_files=_data_files(),
    ext_modules=ext_modules,
    cmdclass=cmdclass,
    python_requires=">=3.10",
    install_requires=[
        "numpy",
        "scipy",
        "torch>=2.1",
        "trimesh",
        "opencv-python-headless<5",
        "pyyaml",
        "rosbags>=0.10",
        "safetensors",
        "tqdm",
        "matplotlib",
        "tensorboard",
    ],
    extras_require={
        "test": ["pytest", "hypothesis", "ruff", "colcon-common-extensions", "manifold3d", "embreex"],
        "objects": ["manifold3d"],
        "bench": ["open3d"],
    },
    zip_safe=False,
    maintainer="ros2_pose6d maintainers",
    maintainer_email="maintainers@ros2-pose6d.dev",
    description="Multi-object 6D pose estimation and refinement for ROS 2",
    license="Apache-2.0",
    entry_points={
        "console_scripts": [
            "pose6d-demo = ros2_pose6d.cli.demo:main",
            "pose6d-make-demo-objects = ros2_pose6d.cli.make_demo_objects:main",
            "pose6d-generate = ros2_pose6d.training.cli_generate:entry",
            "pose6d-train = ros2_pose6d.training.cli_train:entry",
            "pose6d-evaluate = ros2_pose6d.training.cli_evaluate:entry",
            "pose6d-replay = ros2_pose6d.cli.replay:main",
            "detector_node = ros2_pose6d.nodes.detector_node:main",
            "refiner_node = ros2_pose6d.nodes.refiner_node:main",
            "pose6d-bop2bag = ros2_pose6d.cli.bop2bag:main",
            "pose6d-weights = ros2_pose6d.cli.weights:main",
        ],
    },
)
