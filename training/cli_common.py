"""Shared pieces of the training CLIs: config loading with overrides and the one-line error exit (the object
set arguments are ros2_pose6d.cli.object_args, shared with replay)."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from ros2_pose6d.config import ConfigError, apply_overrides, build_config, load_yaml

T = TypeVar("T")


def load_config(cls: type[T], path: Path | None, overrides: list[str], section: str | None = None) -> T:
    """Dataclass ``cls`` from a YAML file (optionally one ``section`` of it) plus ``key=value`` overrides."""
    data = load_yaml(path) if path else {}
    if section is not None:
        data = data.get(section, {}) or {}
    return build_config(cls, apply_overrides(data, overrides))


def run_cli(main: Callable[[], int | None], known_errors: tuple[type[BaseException], ...] = ()) -> None:
    """Run a CLI body: known errors become one line on stderr and exit code 2; Ctrl-C exits 130."""
    try:
        code = main()
    except (ConfigError, FileNotFoundError, ValueError, *known_errors) as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
    sys.exit(code or 0)
