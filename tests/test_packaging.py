"""What ``pip install`` and a distribution packager get: the sdist and wheel as built."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
import tarfile
import zipfile
from email.message import Message
from email.parser import Parser
from importlib.metadata import packages_distributions
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
# Modules a wheel's code imports that no requirement of ours may declare:
# NetBox's own (the plugin runs inside NetBox) and pytest (it loads our plugin).
PROVIDED = {
    "netbox": "NetBox",
    "netbox_branching": "NetBox",
    "utilities": "NetBox",
    "rest_framework": "NetBox, whose API is Django REST framework",
    "pytest": "pytest, which loads branching_ops.testing.pytest_plugin",
    "psycopg_pool": "psycopg[pool], which Django's OPTIONS['pool'] already requires",
}
PUBLISHED_EXTRAS = {"demo", "metrics", "rq"}


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    subprocess.run(
        [sys.executable, "-m", "build", "--sdist", "--wheel", "--outdir", str(out), str(ROOT)],
        check=True,
        capture_output=True,
    )
    return out


def only(dist: Path, pattern: str) -> Path:
    (found,) = dist.glob(pattern)
    return found


def wheel_metadata(dist: Path) -> Message:
    with zipfile.ZipFile(only(dist, "*.whl")) as wheel:
        (name,) = (n for n in wheel.namelist() if n.endswith(".dist-info/METADATA"))
        return Parser().parsestr(wheel.read(name).decode())


def imported_modules(dist: Path) -> set[str]:
    """Top-level names of every ``import`` in the wheel's Python files, relative ones aside."""
    modules: set[str] = set()
    with zipfile.ZipFile(only(dist, "*.whl")) as wheel:
        for name in wheel.namelist():
            if name.endswith(".py"):
                for node in ast.walk(ast.parse(wheel.read(name))):
                    if isinstance(node, ast.Import):
                        modules.update(alias.name.split(".")[0] for alias in node.names)
                    elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                        modules.add(node.module.split(".")[0])
    return modules


def test_twine_check_passes(dist: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "twine", "check", "--strict", *map(str, dist.iterdir())],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_third_party_module_the_wheel_imports_is_declared(dist: Path) -> None:
    metadata = wheel_metadata(dist)
    declared = {
        canonicalize_name(Requirement(line).name) for line in metadata.get_all("Requires-Dist", [])
    }
    ours = {"branching_ops", "branching_ops_netbox", "__future__"}
    third_party = imported_modules(dist) - set(sys.stdlib_module_names) - ours - PROVIDED.keys()
    providers = packages_distributions()
    undeclared = {
        module: providers.get(module)
        for module in third_party
        if not {canonicalize_name(d) for d in providers.get(module, [])} & declared
    }
    assert undeclared == {}


def test_no_developer_tooling_is_published_as_an_extra(dist: Path) -> None:
    assert set(wheel_metadata(dist).get_all("Provides-Extra", [])) == PUBLISHED_EXTRAS


def test_the_sdist_runs_its_own_tests(dist: Path, tmp_path: Path) -> None:
    with tarfile.open(only(dist, "*.tar.gz")) as sdist:
        sdist.extractall(tmp_path, filter="data")
    (unpacked,) = tmp_path.iterdir()
    for shipped in ("manage.py", "mkdocs.yml", "docs/index.md", "tests/conftest.py", "LICENSE"):
        assert (unpacked / shipped).is_file(), shipped
    # The docs' own test reads README, mkdocs.yml and docs/ from the unpacked tree.
    env = {**os.environ, "PYTHONPATH": str(unpacked)}
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", "",
         "tests/test_docs.py", "tests/test_names.py"],
        cwd=unpacked,
        env=env,
        capture_output=True,
        text=True,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:]
    assert " passed" in result.stdout
