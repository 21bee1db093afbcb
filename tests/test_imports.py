"""Every `from botaclip... import name` in the package, its benchmarks and tools resolves, including the imports
inside functions (deferred so that light commands stay light), which no other test may reach."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _imports():
    for folder in ("botaclip", "bench", "tools"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
                if isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").startswith("botaclip"):
                    for alias in node.names:
                        yield f"{path.relative_to(ROOT)}:{node.lineno}", node.module, alias.name


def test_every_botaclip_import_resolves():
    missing = []
    for where, module, name in _imports():
        mod = importlib.import_module(module)
        if name != "*" and not hasattr(mod, name):
            try:
                importlib.import_module(f"{module}.{name}")
            except ImportError:
                missing.append(f"{where}: from {module} import {name}")
    assert not missing, "\n".join(missing)
