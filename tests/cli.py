"""Running mirage's Hydra entry points as a user does, in a subprocess, for the end-to-end tests."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def cli_command(module: str, args: list[str], cache_dir: Path, *extra: str) -> list[str]:
    """``python -m <module> [flags] paths.cache_dir=... <extra> <overrides>`` (Hydra wants flags first)."""
    flags = [a for a in args if a.startswith("-")]
    overrides = [a for a in args if not a.startswith("-")]
    return [
        sys.executable,
        "-m",
        module,
        *flags,
        f"paths.cache_dir={cache_dir}",
        "extras.print_config=false",
        *extra,
        *overrides,
    ]


def run_cli(cmd: list[str], timeout: int = 300, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run(cmd, cwd=REPO_ROOT, capture_output=True, text=True, timeout=timeout, env=ENV)
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed:\n{result.stdout[-3000:]}\n{result.stderr[-5000:]}")
    return result
