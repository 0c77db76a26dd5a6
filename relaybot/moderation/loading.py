"""Turning `[[moderation.hooks]]` tables into moderators: a `use` name resolves to a built-in,
then an entry point in the `relaybot.moderators` group, then a dotted path; every failure is a
ConfigError naming the hook's key path."""

from __future__ import annotations

import contextlib
import importlib
import inspect
from collections.abc import Callable
from importlib.metadata import entry_points
from typing import Any

from relaybot.config.schema import ConfigError, ModerationConfig, ModerationHookConfig
from relaybot.moderation.core import ModerationChain, Moderator, ModeratorOptionError

ENTRY_POINT_GROUP = "relaybot.moderators"

# Import paths rather than classes, so the classifier module is imported only when used.
BUILTINS: dict[str, str] = {
    "words": "relaybot.moderation.builtins:WordsModerator",
    "mass_highlight": "relaybot.moderation.builtins:MassHighlightModerator",
    "links": "relaybot.moderation.builtins:LinksModerator",
    "classifier": "relaybot.moderation.classifier:ClassifierModerator",
}


def available_moderators() -> dict[str, str]:
    """Names `use` accepts without a dotted path, with what each resolves to."""
    found = {ep.name: ep.value for ep in entry_points(group=ENTRY_POINT_GROUP)}
    found.update(BUILTINS)
    return dict(sorted(found.items()))


def _error(hook: ModerationHookConfig, key: str, problem: str) -> ConfigError:
    return ConfigError(f"{hook.where}.{key}: {problem}")


def _import_path(path: str, hook: ModerationHookConfig) -> Any:
    if ":" in path:
        module_name, _, attribute = path.partition(":")
    else:
        module_name, _, attribute = path.rpartition(".")
    parts = [*module_name.split("."), *attribute.split(".")]
    if not module_name or not attribute or not all(part.isidentifier() for part in parts):
        raise _error(hook, "use", f"{path!r} is not a valid path (expected package.module:Name)")
    try:
        target: Any = importlib.import_module(module_name)
    except ModuleNotFoundError as error:
        if error.name and (module_name + ".").startswith(error.name + "."):
            raise _error(
                hook, "use", f"cannot import {path!r}: no module named {error.name!r}"
            ) from None
        raise _error(hook, "use", f"importing {module_name!r} failed: {error}") from error
    except Exception as error:
        raise _error(
            hook, "use", f"importing {module_name!r} failed: {type(error).__name__}: {error}"
        ) from error
    for part in attribute.split("."):
        try:
            target = getattr(target, part)
        except AttributeError:
            raise _error(
                hook, "use", f"cannot import {path!r}: {module_name!r} has no attribute {part!r}"
            ) from None
    return target


def _resolve(hook: ModerationHookConfig) -> Any:
    use = hook.use.strip()
    if use in BUILTINS:
        return _import_path(BUILTINS[use], hook)
    matches = {ep.value: ep for ep in entry_points(group=ENTRY_POINT_GROUP) if ep.name == use}
    if len(matches) > 1:
        raise _error(
            hook,
            "use",
            f"entry point {use!r} is registered more than once ({', '.join(sorted(matches))}); "
            "name one by its dotted path",
        )
    if matches:
        (ep,) = matches.values()
        try:
            return ep.load()
        except Exception as error:
            raise _error(
                hook,
                "use",
                f"cannot load entry point {use!r} ({ep.value}): {type(error).__name__}: {error}",
            ) from error
    if ":" in use or "." in use:
        return _import_path(use, hook)
    known = ", ".join(available_moderators())
    raise _error(
        hook, "use", f"unknown moderator {use!r} (known: {known}; or a dotted path module:Name)"
    )


def _check_options(factory: Callable[..., Any], hook: ModerationHookConfig) -> None:
    """Name the offending key before calling, rather than relaying a bare TypeError."""
    try:
        signature = inspect.signature(factory)
    except (TypeError, ValueError):
        return
    params = signature.parameters.values()
    if any(p.kind is p.VAR_KEYWORD for p in params):
        return
    named = {p.name: p for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
    for key in hook.options:
        if key not in named:
            accepted = ", ".join(sorted(named)) or "none"
            raise _error(hook, key, f"unknown option for {hook.use!r} (options: {accepted})")
    for param in params:
        if param.default is not param.empty or param.kind is param.VAR_POSITIONAL:
            continue
        if param.kind is param.POSITIONAL_ONLY:
            raise _error(
                hook, "use", f"{hook.use!r} takes positional arguments; it cannot be built"
            )
        if param.name not in hook.options:
            raise _error(hook, param.name, f"missing (required by {hook.use!r})")


def load_moderator(hook: ModerationHookConfig) -> Moderator:
    """Resolve `hook.use` and call it with the hook's options as keyword arguments."""
    factory = _resolve(hook)
    if not callable(factory):
        raise _error(hook, "use", f"{hook.use!r} is a {type(factory).__name__}, not a class")
    _check_options(factory, hook)
    try:
        moderator = factory(**dict(hook.options))
    except ModeratorOptionError as error:
        raise _error(hook, error.key, error.problem) from None
    except ConfigError as error:
        raise ConfigError(f"{hook.where}: {error}") from error
    except (TypeError, ValueError) as error:
        raise ConfigError(f"{hook.where}: {hook.use!r} rejected its options: {error}") from error
    except Exception as error:
        raise ConfigError(
            f"{hook.where}: cannot create moderator {hook.use!r}: {type(error).__name__}: {error}"
        ) from error
    missing = [
        method
        for method in ("check_input", "check_output")
        if not callable(getattr(moderator, method, None))
    ]
    if missing:
        raise _error(
            hook,
            "use",
            f"{hook.use!r} made a {type(moderator).__name__} without {' and '.join(missing)}",
        )
    name = getattr(moderator, "name", None)
    if not isinstance(name, str) or not name:
        # Where the object refuses the attribute, the chain falls back to the class name.
        with contextlib.suppress(AttributeError, TypeError):
            moderator.name = hook.use
    return moderator  # type: ignore[no-any-return]


def build_chain(config: ModerationConfig) -> ModerationChain:
    return ModerationChain([load_moderator(hook) for hook in config.hooks], timeout=config.timeout)
