"""The layers of docs/architecture.md, enforced from every import statement (absolute, relative, and
imports inside functions): an import points down the layers, never up or sideways-up."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
FOLDERS = {"runtime": "kubetune", "components": "kubetune.components", "pipelines": "kubetune.pipelines"}

# What each part of kubetune may import of kubetune (itself always). One table, in docs/architecture.md too.
CORE = {"engine", "losses", "checkpoint", "models", "observability", "errors"}
ALLOWED: dict[str, set[str]] = {
    "cli": {"*", "pipelines"},  # entry points: anything, and the KFP layer
    "demo": {"*", "pipelines"},
    "steps": {"recipes", "api", "reward", "tasks"} | CORE,  # api/engine: a server or engine in the step
    "recipes": {"tasks", "reward", "observability", "losses", "errors"},  # never api/ or engine/
    "api": {"tasks"} | CORE,
    "reward": {"tasks", "observability", "errors"},
    "tasks": {"models", "checkpoint", "errors"},
    "engine": {"losses", "checkpoint", "models", "errors"},
    "losses": {"errors"},
    "checkpoint": {"errors"},
    "models": {"checkpoint", "errors"},
    "observability": {"checkpoint", "errors"},
    "errors": set(),
    "kubetune": set(),  # runtime/__init__.py
    "components": {"steps"},  # shims over kubetune.steps only
    "pipelines": {"*", "components"},  # compositions of components; run locally with the library's parts
}


def module_name(path: Path) -> str:
    folder = path.relative_to(ROOT).parts[0]
    parts = path.relative_to(ROOT / folder).with_suffix("").parts
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join((FOLDERS[folder], *parts))


def imported_modules(source: str, module: str, is_package: bool) -> list[tuple[int, str]]:
    """(line, absolute module) for every import of ``kubetune`` in ``source``."""
    package = module if is_package else module.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            # `from . import x` / `from kubetune import x`: x may be a module of that package
            found += [(node.lineno, f"{target}.{alias.name}") for alias in node.names]
    return [(line, name) for line, name in found if name == "kubetune" or name.startswith("kubetune.")]


def area(module: str) -> str:
    """The part of kubetune a module belongs to: ``api``, ``recipes``, ``components``, ``cli``, …"""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "kubetune"


def violations(module: str, source: str, is_package: bool = False) -> list[str]:
    own = area(module)
    allowed = ALLOWED[own]
    found = []
    for line, target in imported_modules(source, module, is_package):
        other = area(target)
        if other in ("kubetune", own) or other == "__init__":
            continue
        if other in ("pipelines", "components") and other not in allowed:
            found.append(f"{module}:{line} imports {target}: the library never imports its KFP layer")
        elif other not in allowed and "*" not in allowed:
            found.append(f"{module}:{line} imports {target}: "
                         f"{own} may import only {sorted(allowed) or 'nothing'}")
    return found


def sources() -> list[tuple[str, Path]]:
    return [(module_name(path), path) for folder in FOLDERS for path in sorted((ROOT / folder).rglob("*.py"))]


def test_every_import_points_down_the_layers() -> None:
    problems = []
    for module, path in sources():
        assert area(module) in ALLOWED, f"{path}: a part of kubetune the layers do not name"
        problems += violations(module, path.read_text(), path.name == "__init__.py")
    assert not problems, "\n".join(problems)


def test_the_checker_sees_each_kind_of_forbidden_import() -> None:
    """Mutations: each rule of the issue, broken once, relative and absolute, at top level and in a
    function."""
    cases = {
        ("kubetune.recipes.sft", "from ..api.embedded import embedded_server"): "recipes may import only",
        ("kubetune.recipes.ppo", "def f():\n    from kubetune.engine import Engine"):
            "recipes may import only",
        ("kubetune.models.bootstrap", "from kubetune.tasks.text2sql import pretraining_corpus"): "models may",
        ("kubetune.engine.engine", "from ..recipes import RECIPES"): "engine may import only",
        ("kubetune.losses.dpo", "from ..engine import Engine"): "losses may import only",
        ("kubetune.steps.train", "from kubetune.pipelines import PIPELINES"): "never imports its KFP layer",
        ("kubetune.steps.train", "from kubetune import components"): "never imports its KFP layer",
        ("kubetune.cli", "from kubetune.components import train_sft"): "never imports its KFP layer",
        ("kubetune.components.text2sql", "from kubetune.recipes import run_sft"):
            "components may import only",
    }
    for (module, source), message in cases.items():
        found = violations(module, source)
        assert len(found) == 1 and message in found[0], (module, source, found)
    assert violations("kubetune.steps.train",
                      "from ..recipes import RECIPES\nfrom .artifacts import MODEL_INFO") == []
    assert violations("kubetune.cli", "from kubetune.pipelines.local import run_local") == []
    assert imported_modules("from . import x", "kubetune.api", is_package=True) == [(1, "kubetune.api.x")]
