"""Moderation hooks: checks that run on every line before it reaches the model (input) and on
every reply before it is sent (output), and may allow, block, or replace the text.

    chain = build_chain(config.moderation)
    verdict = chain.check_input(text, ModerationContext(network, target, nick, private, members))

The contract and the fail-closed chain live in `core`, the rule-based built-ins in `builtins`,
the model-based `classifier` in `classifier`, and config resolution in `loading`.
"""

from relaybot.moderation.builtins import (
    LinksModerator,
    MassHighlightModerator,
    WordsModerator,
    find_links,
    normalize,
)
from relaybot.moderation.classifier import ClassifierModerator
from relaybot.moderation.core import (
    Decision,
    Direction,
    ModerationChain,
    ModerationContext,
    Moderator,
    ModeratorOptionError,
    Verdict,
)
from relaybot.moderation.loading import (
    BUILTINS,
    ENTRY_POINT_GROUP,
    available_moderators,
    build_chain,
    load_moderator,
)

__all__ = [
    "BUILTINS",
    "ENTRY_POINT_GROUP",
    "ClassifierModerator",
    "Decision",
    "Direction",
    "LinksModerator",
    "MassHighlightModerator",
    "ModerationChain",
    "ModerationContext",
    "Moderator",
    "ModeratorOptionError",
    "Verdict",
    "WordsModerator",
    "available_moderators",
    "build_chain",
    "find_links",
    "load_moderator",
    "normalize",
]
