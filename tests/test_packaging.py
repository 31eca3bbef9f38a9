"""The package as users get it: a wheel built from the repository holds every module and every
config, its dependency ranges admit the tested stack, and installed (not editable) into a fresh
virtual environment it composes a config and trains, run from outside the repository.

The fresh environment holds only the wheel; its third-party dependencies are borrowed from this
one through a ``.pth`` line (reinstalling torch would take minutes and 6 GB). Only the wheel's
own files can make recsys importable there: the editable install's hook is not a site directory
of the new environment.
"""

import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest
from conftest import CLI_ENV, REPO_ROOT, SMALL_SYNTHETIC

CHECK_REQUIREMENTS = """
import importlib.metadata as md
from packaging.requirements import Requirement
bad = []
for spec in md.requires("recsys"):
    req = Requirement(spec)
    if req.marker is not None:  # optional extras
        continue
    version = md.version(req.name)
    if not req.specifier.contains(version, prereleases=True):
        bad.append(f"{req} (installed {version})")
print("unsatisfied:", bad)
"""


def _not_packaged(directory: str, names: list[str]) -> list[str]:
    """What a copy of the repository to build from leaves out (environments, data, runs)."""
    top = {".git", ".venv", "data", "outputs", "multirun", "build", "notebooks"}
    at_top = Path(directory) == REPO_ROOT
    return [n for n in names if (at_top and n in top) or n == "__pycache__" or n.endswith(".egg-info")]


def _sources(root: Path, pattern: str) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob(pattern) if "__pycache__" not in p.parts}


@pytest.mark.slow
def test_wheel_installs_into_a_fresh_environment_and_trains(tmp_path: Path):
    env = {**CLI_ENV, "PATH": "/usr/bin:/bin"}
    source = tmp_path / "source"  # setuptools builds in <source>/build: not in the repository
    shutil.copytree(REPO_ROOT, source, ignore=_not_packaged)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                    str(tmp_path / "dist"), str(source)], check=True, capture_output=True, timeout=600)
    wheel = next((tmp_path / "dist").glob("recsys-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    configs = {f"recsys/conf/{p}" for p in _sources(REPO_ROOT / "conf", "*.yaml")}
    modules = {f"{pkg}/{p}" for pkg in ("recsys", "data_prep") for p in _sources(REPO_ROOT / pkg, "*.py")}
    assert configs and configs <= names, sorted(configs - names)[:5]
    assert modules <= names, sorted(modules - names)[:5]

    fresh = tmp_path / "env"
    subprocess.run([sys.executable, "-m", "venv", str(fresh)], check=True, timeout=300)
    site = next((fresh / "lib").glob("python3*/site-packages"))
    (site / "borrowed_dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run([str(fresh / "bin" / "pip"), "install", "-q", "--no-deps", "--no-index", str(wheel)],
                   check=True, capture_output=True, timeout=300)

    def run(*args: str) -> subprocess.CompletedProcess:
        out = subprocess.run(args, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
        assert out.returncode == 0, f"{args[0]} failed:\n{out.stdout[-2000:]}\n{out.stderr[-4000:]}"
        return out

    python = str(fresh / "bin" / "python")
    where = run(python, "-c", "import recsys, recsys.conf; print(recsys.conf.__file__)")
    assert where.stdout.strip().startswith(str(site)), where.stdout  # the wheel's copy, not the repository
    assert run(python, "-c", CHECK_REQUIREMENTS).stdout.strip() == "unsatisfied: []"

    run_dir = tmp_path / "run"
    run(str(fresh / "bin" / "recsys-train"), *SMALL_SYNTHETIC, "data.raw.n_users=80", "adapter=id",
        "encoder/text=none", "encoder/image=none", "logger=none", "trainer.max_epochs=1",
        "trainer.accelerator=cpu", f"paths.root_dir={tmp_path}", f"paths.data_dir={tmp_path / 'data'}",
        f"hydra.run.dir={run_dir}")
    assert '"status": "complete"' in (run_dir / "results.json").read_text()
    bad = subprocess.run([str(fresh / "bin" / "recsys-train"), "cache.dtype=int4"], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2 and "cache.dtype: 'int4'" in bad.stderr
