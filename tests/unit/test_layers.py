"""The import direction of the package, read from the source (every import, also those inside
functions and under TYPE_CHECKING): the lower layers never reach up, and only `relaybot.irc`
touches the irc library."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

import relaybot

PACKAGE = Path(relaybot.__file__).parent

# The data path's lower layers, and what sits on top of them.
LOWER = ("irc", "conversation", "inference", "policy", "config", "moderation")
UPPER = ("bridge", "control", "service", "cli")


def _modules() -> Iterator[tuple[str, Path]]:
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        yield ".".join(parts), path


def imports_of(module: str, path: Path) -> set[str]:
    """Every module name `module` imports, with relative imports resolved."""
    found: set[str] = set()
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            found.add(base)
            # `from relaybot.irc import session` imports the module relaybot.irc.session
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return found


def layer_of(name: str) -> str | None:
    parts = name.split(".")
    return parts[1] if len(parts) > 1 and parts[0] == "relaybot" else None


def test_the_reader_resolves_relative_and_nested_imports(tmp_path: Path) -> None:
    source = tmp_path / "mod.py"
    source.write_text(
        "from . import sibling\n"
        "from ..service.bot import Bot\n"
        "def late():\n"
        "    import relaybot.cli.main\n"
    )
    found = imports_of("relaybot.policy.mod", source)
    assert {"relaybot.policy.sibling", "relaybot.service.bot", "relaybot.cli.main"} <= found
    assert {layer_of(name) for name in found} >= {"policy", "service", "cli"}


def test_every_module_is_in_a_known_layer() -> None:
    # the public face, `python -m relaybot`, and the logger and atomic files every layer uses
    loose = {"relaybot", "relaybot.__main__", "relaybot.log", "relaybot.files"}
    unknown = [
        module
        for module, _ in _modules()
        if module not in loose and layer_of(module) not in (*LOWER, *UPPER)
    ]
    assert unknown == []


@pytest.mark.parametrize("layer", LOWER)
def test_lower_layers_never_import_the_upper_ones(layer: str) -> None:
    offending = sorted(
        f"{module} imports {name}"
        for module, path in _modules()
        if layer_of(module) == layer
        for name in imports_of(module, path)
        if layer_of(name) in UPPER
    )
    assert offending == []


def test_only_the_irc_package_imports_the_irc_library() -> None:
    offending = sorted(
        f"{module} imports {name}"
        for module, path in _modules()
        if layer_of(module) != "irc"
        for name in imports_of(module, path)
        if name.split(".")[0] in ("irc", "jaraco")
    )
    assert offending == []


def test_only_the_metrics_package_imports_prometheus_client() -> None:
    # The rest of the bot reports through observer Protocols, and runs without the endpoint.
    offending = sorted(
        f"{module} imports {name}"
        for module, path in _modules()
        if not module.startswith("relaybot.service.metrics")
        for name in imports_of(module, path)
        if name.split(".")[0] == "prometheus_client"
    )
    assert offending == []
