"""Install anywhere: the Python floor is true, and a built wheel works outside the checkout.

The wheel test builds evoopt from a copy of the sources, installs it into a fresh virtual
environment (``--system-site-packages``: torch, Ray and the rest come from this interpreter) and
runs the installed ``evoopt`` command from a folder that is not the checkout.
"""

from __future__ import annotations

import ast
import json
import os
import shutil
import site
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

from evoopt.campaign.config import ConfigError, campaign_config_path, copy_shipped_campaigns
from evoopt.paths import EXPERIMENTS_DIR, SHIPPED_FOLDERS

REPO = Path(__file__).resolve().parents[1]
MICRO_CAMPAIGN = REPO / "tests" / "data" / "campaign-micro.toml"
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())

# Standard-library modules and names newer than Python 3.8, with the version that added them.
NEW_MODULES = {"zoneinfo": (3, 9), "graphlib": (3, 9), "tomllib": (3, 11),
               "annotationlib": (3, 14), "compression": (3, 14)}
NEW_NAMES = {
    ("typing", "TypeAlias"): (3, 10), ("typing", "ParamSpec"): (3, 10),
    ("typing", "TypeGuard"): (3, 10), ("typing", "Concatenate"): (3, 10),
    ("itertools", "pairwise"): (3, 10), ("typing", "Self"): (3, 11),
    ("typing", "Never"): (3, 11), ("typing", "assert_never"): (3, 11),
    ("typing", "LiteralString"): (3, 11), ("typing", "Required"): (3, 11),
    ("typing", "NotRequired"): (3, 11), ("datetime", "UTC"): (3, 11),
    ("enum", "StrEnum"): (3, 11), ("typing", "override"): (3, 12),
    ("itertools", "batched"): (3, 12), ("typing", "TypeIs"): (3, 13),
    ("typing", "ReadOnly"): (3, 13),
}
# What pip needs to build the wheel (a missing one fails the build, which is the point).
BUILD_INPUTS = ("pyproject.toml", "setup.py", "MANIFEST.in", "README.md", "evoopt",
                *SHIPPED_FOLDERS)


def python_sources() -> list[Path]:
    files = [REPO / "setup.py"]
    for folder in ("evoopt", "tests", "benchmarks"):
        files += sorted((REPO / folder).rglob("*.py"))
    return files


def needed_python(path: Path) -> tuple[int, int]:
    """The oldest Python 3 that parses ``path`` and has the standard library it imports."""
    source = path.read_text()
    tree = ast.parse(source)
    floor = (3, 8)
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                floor = max(floor, NEW_MODULES.get(alias.name.split(".")[0], floor))
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            floor = max(floor, NEW_MODULES.get(node.module.split(".")[0], floor))
            for alias in node.names:
                floor = max(floor, NEW_NAMES.get((node.module, alias.name), floor))
    for minor in range(floor[1], sys.version_info.minor + 1):
        try:
            ast.parse(source, feature_version=(3, minor))
            return max(floor, (3, minor))
        except SyntaxError:
            continue
    return sys.version_info[:2]


def test_requires_python_is_the_floor_the_code_needs() -> None:
    needs = {path: needed_python(path) for path in python_sources()}
    floor = max(needs.values())
    declared = PYPROJECT["project"]["requires-python"]
    assert declared == f">={floor[0]}.{floor[1]}", (
        f"requires-python is {declared!r} but the code needs {floor}: "
        f"{sorted(str(p.relative_to(REPO)) for p, v in needs.items() if v == floor)[:5]}")
    assert PYPROJECT["tool"]["ruff"]["target-version"] == f"py{floor[0]}{floor[1]}"
    assert sys.version_info[:2] >= floor  # the suite runs on a supported Python


def test_campaigns_resolve_by_name_or_path(tmp_path: Path) -> None:
    assert campaign_config_path("quickstart") == EXPERIMENTS_DIR / "quickstart.toml"
    own = tmp_path / "mine.toml"
    own.write_text("")
    assert campaign_config_path(own) == own
    with pytest.raises(ConfigError, match="unknown campaign 'nope'; shipped campaigns: .*quick"):
        campaign_config_path("nope")
    with pytest.raises(ConfigError, match="campaign config not found"):
        campaign_config_path(tmp_path / "missing.toml")


def test_init_copies_campaigns_and_never_overwrites(tmp_path: Path) -> None:
    target = tmp_path / "mine"
    written = copy_shipped_campaigns(target)
    shipped = sorted(EXPERIMENTS_DIR.glob("*.toml"))
    assert [p.name for p in written] == [p.name for p in shipped]
    assert all(w.read_text() == s.read_text() for w, s in zip(written, shipped, strict=True))
    (target / "quickstart.toml").write_text("# edited\n")
    (target / "discover-cpu.toml").unlink()
    with pytest.raises(FileExistsError, match="refusing to overwrite .*quickstart.toml"):
        copy_shipped_campaigns(target)
    assert (target / "quickstart.toml").read_text() == "# edited\n"
    assert not (target / "discover-cpu.toml").exists()  # nothing copied when one exists


# -- the built wheel ------------------------------------------------------------------------


def clean_env(**extra: str) -> dict[str, str]:
    """This environment without what would point Python or Ray elsewhere."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "RAY_ADDRESS")}
    return {**env, "EVOOPT_OFFLINE": "1", "COLUMNS": "200", **extra}


def run(args: list, cwd: Path, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(a) for a in args], cwd=cwd, env=clean_env(**env),
                          capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """evoopt built as a wheel by pip from a copy of this checkout's sources."""
    root = tmp_path_factory.mktemp("build")
    src = root / "src"
    src.mkdir()
    for name in BUILD_INPUTS:
        if (REPO / name).is_dir():
            shutil.copytree(REPO / name, src / name,
                            ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
        else:
            shutil.copy2(REPO / name, src / name)
    proc = run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                "--no-index", "--disable-pip-version-check", "-q", "-w", root / "dist", src], root)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (path,) = (root / "dist").glob("evoopt-*.whl")
    return path


def inherit_site_packages(python: Path) -> None:
    """Make this interpreter's packages (torch, Ray, ...) importable in the venv of ``python``.

    ``--system-site-packages`` gives the *base* interpreter's site-packages; when the tests
    themselves run in a virtualenv (as most users' do), the dependencies live in that venv's
    site-packages instead, so those are added too, as plain path lines of a ``.pth`` file
    (after the venv's own site-packages, and without running the ``.pth`` files there: an
    editable install of the checkout must not shadow the installed wheel)."""
    if sys.prefix == sys.base_prefix:
        return
    target = run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                 python.parent)
    paths = [p for p in site.getsitepackages() if Path(p).is_dir()]
    (Path(target.stdout.strip()) / "_evoopt_test_outer_env.pth").write_text(
        "".join(f"{p}\n" for p in paths))


@pytest.fixture(scope="module")
def venv(wheel: Path, tmp_path_factory) -> Path:
    """A fresh virtual environment with the wheel installed (dependencies from the system)."""
    root = tmp_path_factory.mktemp("venv")
    proc = run([sys.executable, "-m", "venv", "--system-site-packages", "--without-pip",
                root / "venv"], root)
    assert proc.returncode == 0, proc.stderr
    python = root / "venv" / "bin" / "python"
    inherit_site_packages(python)
    proc = run([python, "-m", "pip", "install", "--no-deps", "--no-index",
                "--disable-pip-version-check", "-q", wheel], root)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return root / "venv"


def test_wheel_ships_the_resource_folders(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    for folder in SHIPPED_FOLDERS:
        files = {p.relative_to(REPO).as_posix() for p in (REPO / folder).rglob("*")
                 if p.is_file() and "__pycache__" not in p.parts}
        assert files and {f"evoopt/_shipped/{f}" for f in files} <= names, folder
    assert "evoopt/_shipped/genomes/reference/evolved-marfinetz-2025.toml" in names
    assert "evoopt/report/templates/report.html.j2" in names
    assert not any(n.split("/")[0] in SHIPPED_FOLDERS for n in names)  # nothing at top level
    metadata = zipfile.ZipFile(wheel).read(f"{wheel.name.split('-py3')[0]}.dist-info/METADATA")
    assert f"Requires-Python: {PYPROJECT['project']['requires-python']}" in metadata.decode()


def test_installed_wheel_runs_outside_the_checkout(venv: Path, tmp_path: Path,
                                                   data_dir: Path) -> None:
    evoopt = venv / "bin" / "evoopt"
    where = run([venv / "bin" / "python", "-c",
                 "import evoopt, evoopt.paths as p; print(evoopt.__file__); "
                 "print(p.GENOMES_DIR)"], tmp_path)
    package, genomes = where.stdout.split()
    site = str(venv / "lib")
    assert package.startswith(site) and genomes.startswith(site), where.stdout  # not the checkout
    assert genomes.endswith("evoopt/_shipped/genomes")

    shown = run([evoopt, "show", "adam"], tmp_path)
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.startswith("adam  hash ") and "lr=0.001" in shown.stdout

    evaluated = run([evoopt, "evaluate", "adam", "--task", "cifar10-tiny", "--data-dir", data_dir,
                     "--json"], tmp_path)
    assert evaluated.returncode == 0, evaluated.stderr[-2000:]
    result = json.loads(evaluated.stdout)
    assert result["status"] == "ok" and result["seeds"][0]["steps"] == 30
    assert result["genome"]["name"] == "adam"

    # a shipped campaign by name: it is found (the run then stops at the missing data)
    quick = run([evoopt, "run", "quickstart", "--serial", "--out", tmp_path / "q",
                 "--data-dir", tmp_path / "no-data"], tmp_path)
    assert quick.returncode == 2 and "Traceback" not in quick.stderr
    assert "cifar-10-batches-py" in quick.stderr and "unknown campaign" not in quick.stderr
    unknown = run([evoopt, "run", "nope"], tmp_path)
    assert unknown.returncode == 2 and "shipped campaigns: " in unknown.stderr
    assert "quickstart" in unknown.stderr

    init = run([evoopt, "init", "mine"], tmp_path)
    assert init.returncode == 0, init.stderr
    assert sorted(p.name for p in (tmp_path / "mine").glob("*.toml")) == sorted(
        p.name for p in EXPERIMENTS_DIR.glob("*.toml"))
    again = run([evoopt, "init", "mine"], tmp_path)
    assert again.returncode == 2 and "refusing to overwrite" in again.stderr

    # a real (tiny) campaign from the installed package, seeds and task found by name
    ran = run([evoopt, "run", MICRO_CAMPAIGN, "--serial", "--out", tmp_path / "t",
               "--data-dir", data_dir], tmp_path)
    assert ran.returncode == 0, ran.stderr[-2000:]
    status = run([evoopt, "status", tmp_path / "t", "--json"], tmp_path)
    info = json.loads(status.stdout)
    assert info["state"] == "finished" and info["evaluations_done"] >= 3
    assert (tmp_path / "t" / "best_optimizer.py").is_file()

