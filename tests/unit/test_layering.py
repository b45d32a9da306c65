"""The package's layers: every import points down the stack, no module imports itself back through others, and
only the CLI parses arguments. Function-level imports count like top-level ones."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "mini_bert"
# Each layer may import only the layers before it in this list (and modules of its own layer).
STACK = ["errors", "config", "core", "gradcheck", "reference", "data", "training", "factory", "evaluation", "analysis",
         "cli"]
FACADE = {"mini_bert", "mini_bert.__main__"}      # the package's lazy exports and `python -m mini_bert`


def modules() -> dict[str, Path]:
    out = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = path
    return out


def imports_of(name: str, path: Path, known: set[str]) -> set[str]:
    """The package modules `name` imports (a package counts as its __init__)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            candidates = [f"{target}.{alias.name}" for alias in node.names] + [target]
        elif isinstance(node, ast.Import):
            candidates = [alias.name for alias in node.names]
        else:
            continue
        for c in candidates:
            if c in known and c != name:
                found.add(c)
                break
    return found


def layer(name: str) -> int:
    return STACK.index(name.split(".")[1])


def graph() -> dict[str, set[str]]:
    mods = modules()
    return {name: imports_of(name, path, set(mods)) for name, path in mods.items()}


def test_every_module_belongs_to_a_layer():
    unknown = [m for m in modules() if m not in FACADE and m.split(".")[1] not in STACK]
    assert not unknown, f"modules outside the stack {STACK}: {unknown}"


def test_imports_only_point_down_the_stack():
    upward = sorted(f"{src} -> {dst}" for src, dsts in graph().items() if src not in FACADE
                    for dst in dsts if dst not in FACADE and layer(dst) > layer(src))
    assert not upward, "imports pointing up the stack:\n" + "\n".join(upward)


def test_there_is_no_import_circle():
    g = {m: {d for d in ds if d not in FACADE} for m, ds in graph().items() if m not in FACADE}
    state: dict[str, int] = {}
    circles = []

    def visit(m, path):
        state[m] = 1
        for d in sorted(g.get(m, ())):
            if state.get(d) == 1:
                circles.append(" -> ".join(path[path.index(d):] + [d]) if d in path else f"{m} -> {d}")
            elif d not in state:
                visit(d, path + [d])
        state[m] = 2

    for m in sorted(g):
        if m not in state:
            visit(m, [m])
    assert not circles, "import circles:\n" + "\n".join(circles)


def test_only_the_cli_parses_arguments_or_runs_as_a_script():
    offenders = []
    for name, path in modules().items():
        if name.startswith("mini_bert.cli") or name in FACADE:
            continue
        text = path.read_text(encoding="utf-8")
        if "argparse" in text or '__name__ == "__main__"' in text:
            offenders.append(name)
    assert not offenders, f"argparse or a __main__ block outside mini_bert/cli/: {offenders}"


def test_the_checker_sees_an_upward_import(tmp_path):
    """The rule is live: an import of training from core is reported."""
    fake = tmp_path / "mini_bert" / "core"
    fake.mkdir(parents=True)
    (fake / "bad.py").write_text("from ..training import trainer\n", encoding="utf-8")
    found = imports_of("mini_bert.core.bad", fake / "bad.py", {"mini_bert.training.trainer"})
    assert found == {"mini_bert.training.trainer"} and layer("mini_bert.training.trainer") > layer("mini_bert.core.bad")
