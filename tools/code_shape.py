"""The code-shape budget that `make test` enforces, and the numbers behind it.

    python tools/code_shape.py            # report: longest functions, most parameters, private imports, debt
    python tools/code_shape.py --check    # exit 1 when a function outside the debt list breaks the budget

Budget (botaclip/ only):
- a function or method is at most MAX_LINES lines (docstring included);
- it takes at most MAX_PARAMS parameters (self/cls, *args and **kwargs not counted), except `__init__` of
  estimators and models (their hyperparameters, as in scikit-learn and timm) and click commands (one parameter
  per option: the CLI only parses);
- no module imports a private name (`_x`) of another botaclip module.

`DEBT` lists the functions that broke the budget when it was introduced, with their size then: they may shrink
but not grow, and a function that meets the budget must be removed from the list (the check says so).
"""

from __future__ import annotations

import argparse
import ast
import sys
from pathlib import Path

MAX_LINES = 80
MAX_PARAMS = 8
ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "botaclip"

# qualified name -> (lines, parameters) when the budget was set; each may only go down. Empty since issue 15:
# every function meets the budget, so a new offender fails --check instead of joining this table.
DEBT: dict[str, tuple[int, int]] = {}


def _params(fn: ast.FunctionDef | ast.AsyncFunctionDef) -> int:
    a = fn.args
    names = [p.arg for p in a.posonlyargs + a.args + a.kwonlyargs]
    return len([n for n in names if n not in ("self", "cls")])


def _is_click_command(fn: ast.AST) -> bool:
    for d in getattr(fn, "decorator_list", []):
        text = ast.unparse(d)
        if ".command" in text or text.startswith(("click.option", "click.argument")) or ".option(" in text:
            return True
    return False


def functions(package: Path = PACKAGE):
    """(qualified name, lines, parameters, exempt from the parameter budget) of every function in ``package``."""
    for path in sorted(package.rglob("*.py")):
        rel = path.relative_to(ROOT).as_posix()
        tree = ast.parse(path.read_text(), filename=rel)
        stack: list[tuple[ast.AST, str]] = [(tree, "")]
        while stack:
            node, prefix = stack.pop()
            for child in ast.iter_child_nodes(node):
                if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    name = f"{prefix}{child.name}"
                    exempt = child.name == "__init__" or _is_click_command(child)
                    yield f"{rel}:{name}", child.end_lineno - child.lineno + 1, _params(child), exempt
                    stack.append((child, f"{name}."))
                elif isinstance(child, ast.ClassDef):
                    stack.append((child, f"{prefix}{child.name}."))


def private_imports(package: Path = PACKAGE) -> list[str]:
    """`module: from other import _name` for each private name imported across botaclip modules."""
    out = []
    for path in sorted(package.rglob("*.py")):
        rel = path.relative_to(ROOT).as_posix()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("botaclip"):
                for alias in node.names:
                    if alias.name.startswith("_") and not alias.name.startswith("__"):
                        out.append(f"{rel}: from {node.module} import {alias.name}")
    return out


def violations() -> list[str]:
    problems = []
    seen = set()
    for name, lines, params, exempt in functions():
        over_lines, over_params = lines > MAX_LINES, params > MAX_PARAMS and not exempt
        if name in DEBT:
            seen.add(name)
            was_lines, was_params = DEBT[name]
            if lines > max(was_lines, MAX_LINES) or params > max(was_params, MAX_PARAMS):
                problems.append(f"{name} grew: {lines} lines, {params} parameters (debt: {was_lines}, {was_params})")
            elif not (over_lines or over_params):
                problems.append(f"{name} now meets the budget: remove it from DEBT in tools/code_shape.py")
        elif over_lines or over_params:
            problems.append(f"{name}: {lines} lines, {params} parameters (budget: {MAX_LINES} lines, "
                            f"{MAX_PARAMS} parameters)")
    problems += [f"{n}: listed in DEBT but not found" for n in DEBT if n not in seen]
    problems += [f"private import across modules: {p}" for p in private_imports()]
    return problems


def report() -> None:
    rows = list(functions())
    print(f"functions in botaclip/: {len(rows)}; over {MAX_LINES} lines: {sum(r[1] > MAX_LINES for r in rows)}; "
          f"over 60 lines: {sum(r[1] > 60 for r in rows)}; over {MAX_PARAMS} parameters (not exempt): "
          f"{sum(r[2] > MAX_PARAMS and not r[3] for r in rows)}")
    print("longest:")
    for name, lines, params, _ in sorted(rows, key=lambda r: -r[1])[:10]:
        print(f"  {lines:4d} lines {params:3d} params  {name}")
    print("most parameters (not exempt):")
    for name, lines, params, _ in sorted((r for r in rows if not r[3]), key=lambda r: -r[2])[:10]:
        print(f"  {params:3d} params {lines:4d} lines  {name}")
    private = private_imports()
    print(f"private cross-module imports: {len(private)}")
    for p in private:
        print(f"  {p}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="exit 1 on a budget violation")
    ap.add_argument("--debt", action="store_true", help="print today's offenders as a DEBT table")
    args = ap.parse_args()
    if args.debt:
        for name, lines, params, exempt in functions():
            if lines > MAX_LINES or (params > MAX_PARAMS and not exempt):
                print(f'    "{name}": ({lines}, {params}),')
        return 0
    if not args.check:
        report()
        return 0
    problems = violations()
    for p in problems:
        print(f"code shape: {p}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
