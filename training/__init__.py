"""ros2_pose6d.training: offline training (synthetic data from meshes, BOP datasets, train/eval CLIs).

Installed from the repository's ``training/`` folder as a subpackage (setup.py ``package_dir``).
"""
