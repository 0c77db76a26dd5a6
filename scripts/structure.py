"""Print the package's size figures: the longest functions, the largest classes, the largest
modules. Used to follow the restructuring (docs/architecture.md quotes its output).

    python scripts/structure.py [--top N] [PACKAGE_DIR]
"""

from __future__ import annotations

import argparse
import ast
from pathlib import Path


def _span(node: ast.AST) -> int:
    start = min([node.lineno] + [d.lineno for d in getattr(node, "decorator_list", [])])
    end = node.end_lineno or node.lineno
    return end - start + 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("package", nargs="?", default="relaybot", type=Path)
    parser.add_argument("--top", type=int, default=10)
    args = parser.parse_args()

    functions: list[tuple[int, str]] = []
    classes: list[tuple[int, int, str]] = []
    modules: list[tuple[int, str]] = []
    for path in sorted(args.package.rglob("*.py")):
        text = path.read_text(encoding="utf-8")
        modules.append((len(text.splitlines()), str(path)))
        tree = ast.parse(text)
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                functions.append((_span(node), f"{path}:{node.lineno} {node.name}"))
            elif isinstance(node, ast.ClassDef):
                methods = sum(
                    isinstance(item, ast.FunctionDef | ast.AsyncFunctionDef) for item in node.body
                )
                classes.append((_span(node), methods, f"{path}:{node.lineno} {node.name}"))

    print(f"{len(modules)} modules, {sum(n for n, _ in modules)} lines")
    print("\nlongest functions (lines):")
    for lines, where in sorted(functions, reverse=True)[: args.top]:
        print(f"  {lines:5d}  {where}")
    print("\nlargest classes (lines, methods):")
    for lines, methods, where in sorted(classes, reverse=True)[: args.top // 2]:
        print(f"  {lines:5d} {methods:4d}  {where}")
    print("\nmodules over 400 lines:")
    for lines, where in sorted(modules, reverse=True):
        if lines > 400:
            print(f"  {lines:5d}  {where}")


if __name__ == "__main__":
    main()
