"""How big the code's pieces are, and how many places name a stage or a strategy (issue "Stages as objects").

``python tests/code_shape.py [ROOT]`` prints both for a checkout (default: this one); the
numbers are read from the AST, so a comment or a docstring counts as the lines it spans.
``tests/test_code_shape.py`` holds the limits: no function over 80 lines, no module over 400.

Counting "places that name a stage": a stage function imported from its module (outside
``stages/pipeline.py``, which declares them), a stage name compared with a variable that holds
a stage (its source text says ``stage`` or ``name``), used as a key of a stage-keyed mapping
(``results["plan"]``), or passed to a function that looks a stage up by name. "Places that
name a strategy": a strategy name as a string literal in the product (src/, flows/, tasks/),
outside the catalog (``catalog.py``, the one list) and the plan's table (``analysis/preferences.py``).
"""

from __future__ import annotations

import ast
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PRODUCT = ("src", "flows", "tasks")
STAGE_NAMES = ("validate", "pretrain", "similarity", "plan", "train", "evaluate", "register")
# The stage functions as their modules named them, before and after they became ``Stage.run``.
STAGE_FUNCTIONS = ("validate", "run", "pretrain", "measure_similarity", "make_plan", "train_stage", "evaluate", "register")
BY_NAME_CALLS = ("stage", "run_stage", "tracked", "tracked_stage", "stage_key", "outputs_match", "write_stamp")
STRATEGY_HOMES = ("catalog.py", "analysis/preferences.py")


@dataclass(frozen=True)
class Piece:
    lines: int
    where: str


def python_files(root: Path, folders: tuple[str, ...] = PRODUCT) -> list[Path]:
    return sorted(f for folder in folders for f in (root / folder).rglob("*.py"))


def functions(root: Path) -> list[Piece]:
    """Every function and method, longest first (its decorators not counted)."""
    found = []
    for file in python_files(root):
        for node in ast.walk(ast.parse(file.read_text(encoding="utf-8"))):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                end = node.end_lineno or node.lineno
                found.append(Piece(end - node.lineno + 1, f"{file.relative_to(root)}:{node.name}"))
    return sorted(found, key=lambda p: (-p.lines, p.where))


def modules(root: Path) -> list[Piece]:
    found = [Piece(len(f.read_text(encoding="utf-8").splitlines()), str(f.relative_to(root))) for f in python_files(root)]
    return sorted(found, key=lambda p: (-p.lines, p.where))


def _stage_places(file: Path, rel: str) -> list[str]:
    places = []
    for node in ast.walk(ast.parse(file.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("autotransfer.stages."):
            module = (node.module or "").rsplit(".", 1)[-1]
            if module in STAGE_NAMES and rel != "src/autotransfer/stages/pipeline.py":
                places += [f"{rel}:{node.lineno} imports {alias.name}" for alias in node.names
                           if alias.name in STAGE_FUNCTIONS]
        elif isinstance(node, ast.Compare):
            sides = [node.left, *node.comparators]
            named = [s.value for s in sides if isinstance(s, ast.Constant) and s.value in STAGE_NAMES]
            others = " ".join(ast.unparse(s) for s in sides if not isinstance(s, ast.Constant)).lower()
            if named and ("stage" in others or "name" in others):
                places.append(f"{rel}:{node.lineno} compares {named[0]!r}")
        elif isinstance(node, ast.Subscript) and isinstance(node.slice, ast.Constant):
            mapping = ast.unparse(node.value).lower()
            if node.slice.value in STAGE_NAMES and any(k in mapping for k in ("stage", "result", "task")):
                places.append(f"{rel}:{node.lineno} keys {node.slice.value!r}")
        elif isinstance(node, ast.Call):
            called = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
            if called in BY_NAME_CALLS:
                places += [f"{rel}:{node.lineno} looks up {a.value!r}" for a in node.args
                           if isinstance(a, ast.Constant) and a.value in STAGE_NAMES]
    return places


def stage_places(root: Path, folders: tuple[str, ...]) -> list[str]:
    return [p for f in python_files(root, folders) for p in _stage_places(f, str(f.relative_to(root)))]


def strategy_places(root: Path, strategies: tuple[str, ...]) -> list[str]:
    places = []
    for file in python_files(root):
        rel = str(file.relative_to(root))
        if rel.endswith(STRATEGY_HOMES):
            continue
        for node in ast.walk(ast.parse(file.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Constant) and node.value in strategies:
                places.append(f"{rel}:{node.lineno} {node.value}")
    return places


def main(root: Path) -> None:
    from autotransfer.catalog import KINDS

    print(f"# {root}")
    print("longest functions:", ", ".join(f"{p.where} {p.lines}" for p in functions(root)[:6]))
    print("largest modules:", ", ".join(f"{p.where} {p.lines}" for p in modules(root)[:6]))
    for folders in (PRODUCT, ("bench",), ("tests",)):
        places = stage_places(root, folders)
        by_file = Counter(p.split(":")[0] for p in places)
        print(f"places naming a stage in {'/'.join(folders)}: {len(places)}", dict(by_file.most_common()))
    places = strategy_places(root, tuple(KINDS))
    print(f"places naming a strategy in {'/'.join(PRODUCT)} (outside the catalog and the table): {len(places)}",
          dict(Counter(p.split(":")[0] for p in places).most_common()))


if __name__ == "__main__":
    main(Path(sys.argv[1]).resolve() if len(sys.argv) > 1 else REPO)
