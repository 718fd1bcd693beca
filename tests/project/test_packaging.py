"""The distribution ships every package under runtime/, components/ and pipelines/."""

from __future__ import annotations

from pathlib import Path

import tomllib

ROOT = Path(__file__).resolve().parents[2]
MAPPING = {"runtime": "kubetune", "components": "kubetune.components", "pipelines": "kubetune.pipelines"}


def test_every_package_is_listed_in_pyproject() -> None:
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = set()
    for folder, package in MAPPING.items():
        for init in (ROOT / folder).rglob("__init__.py"):
            relative = init.parent.relative_to(ROOT / folder).parts
            found.add(".".join((package, *relative)))
    assert found == listed


def test_top_level_layout() -> None:
    for name in ("components", "pipelines", "runtime", "images", "tests", "manifests", "docs", "bench",
                 "pyproject.toml", "Makefile", "README.md", ".ci/run"):
        assert (ROOT / name).exists(), name
