"""
Assemble the Hugging Face Space folder: `spaces/` plus a wheel of this checkout, so the Space installs exactly this
code without the package being on any index.

    python scripts/build_space.py dist/space      # then upload dist/space as the Space repo

`spaces/requirements.txt` names the wheel by its path inside the Space (`wheels/hf_recunlearn-<version>-...whl`);
this script builds that wheel and checks the name matches.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
from pathlib import Path


ROOT = Path(__file__).resolve().parents[1]
SPACE = ROOT / "spaces"


def wheel_requirement() -> str:
    """The requirements.txt line that installs the library: a wheel path inside the Space."""
    for line in (SPACE / "requirements.txt").read_text().splitlines():
        line = line.split("#")[0].strip()
        if re.match(r"^\./wheels/hf_recunlearn-[^/]+\.whl$", line):
            return line
    raise SystemExit("spaces/requirements.txt names no ./wheels/hf_recunlearn-*.whl line")


def build(target: Path) -> Path:
    if target.exists():
        shutil.rmtree(target)
    shutil.copytree(SPACE, target, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    wheels = target / "wheels"
    wheels.mkdir()
    cmd = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(wheels), str(ROOT)]
    subprocess.run(cmd, check=True)
    built = sorted(wheels.glob("hf_recunlearn-*.whl"))
    wanted = target / wheel_requirement()
    if [p.name for p in built] != [wanted.name]:
        raise SystemExit(
            f"Built {[p.name for p in built]}, but spaces/requirements.txt installs {wanted.name}: update the version "
            "in spaces/requirements.txt to match setup.cfg."
        )
    return target


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("target", nargs="?", default=str(ROOT / "dist" / "space"))
    out = build(Path(parser.parse_args(argv).target))
    print(f"Space folder ready: {out}")


if __name__ == "__main__":
    main()
