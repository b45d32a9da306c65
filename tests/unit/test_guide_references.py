"""Every backward pass in mini_bert/core, and every optimizer and clipping rule in mini_bert/training, names the
section of docs/MATHEMATICAL_GUIDE.md (or, for the architectural variants, docs/VARIANTS.md) that derives it, and
that section exists. The convention: `(guide, section "LayerNorm")` or `(VARIANTS.md, section "Gated attention")`
in the docstring."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
GUIDE = REPO / "docs" / "MATHEMATICAL_GUIDE.md"
VARIANTS = REPO / "docs" / "VARIANTS.md"
# Beyond core's backward functions: the update rules the guide derives.
DERIVED_IN_TRAINING = {
    "optimizer.py": ["AdamW", "clip_grad_norm"],
    "advanced_optimizers.py": ["Lion", "adaptive_gradient_clip", "AdaptiveGradientClipper", "Lookahead"],
}


def headings(doc: Path) -> set[str]:
    return {m[1].strip() for m in re.finditer(r"^#{2,3} (.+)$", doc.read_text(encoding="utf-8"), re.M)}


def cited(doc: str) -> tuple[set[str], set[str]]:
    """(guide sections, VARIANTS.md sections) that a docstring names."""
    doc = " ".join(doc.split())                                   # a citation may wrap across lines
    variants = set(re.findall(r'VARIANTS\.md, section "([^"]+)"', doc))
    guide = set(re.findall(r'(?<!VARIANTS\.md, )section "([^"]+)"', doc))
    return guide, variants


def definitions() -> list[tuple[str, str, str]]:
    """(file, name, docstring) of every backward in core and every derived update rule in training."""
    out = []
    for path in sorted((REPO / "mini_bert" / "core").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and "backward" in node.name:
                out.append((path.name, node.name, ast.get_docstring(node) or ""))
    for file, names in DERIVED_IN_TRAINING.items():
        tree = ast.parse((REPO / "mini_bert" / "training" / file).read_text(encoding="utf-8"))
        found = {n.name: ast.get_docstring(n) or "" for n in tree.body
                 if isinstance(n, (ast.FunctionDef, ast.ClassDef))}
        out += [(file, name, found.get(name, "")) for name in names]
    return out


DEFINITIONS = definitions()


def test_the_scan_finds_the_backwards():
    names = {name for _, name, _ in DEFINITIONS}
    assert len(DEFINITIONS) >= 30 and {"layer_norm_backward", "backward_from_logits", "Lion"} <= names


@pytest.mark.parametrize("file,name,doc", DEFINITIONS, ids=[f"{f}:{n}" for f, n, _ in DEFINITIONS])
def test_docstring_names_a_guide_section_that_exists(file, name, doc):
    guide, variants = cited(doc)
    assert guide or variants, (f"{file}: {name}'s docstring names no section: add (guide, section \"...\") for the "
                               f"docs/MATHEMATICAL_GUIDE.md section that derives it")
    assert not guide - headings(GUIDE), f"{file}: {name} cites {sorted(guide - headings(GUIDE))}, not in the guide"
    assert not variants - headings(VARIANTS), f"{file}: {name} cites {sorted(variants - headings(VARIANTS))}, " \
                                              f"not in VARIANTS.md"


def test_the_guide_links_the_variants_document():
    text = GUIDE.read_text(encoding="utf-8")
    assert "(VARIANTS.md" in text, "docs/MATHEMATICAL_GUIDE.md does not link docs/VARIANTS.md"
