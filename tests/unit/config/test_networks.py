"""`[[networks]]`: several networks in one file, what they inherit from the top-level tables,
and the mistakes the loader names (a file with `[irc]` keeps meaning one network)."""

from __future__ import annotations

import pytest

from relaybot.config.loader import loads_config
from relaybot.config.schema import ConfigError
from tests.support.paths import REPO

TWO = """
[policy]
cooldown = 7.0
[reply]
max_lines = 2
[operators]
prefix = "!bot"

[[networks]]
name = "libera"
[networks.irc]
host = "irc.libera.chat"
nick = "relaybot"
channels = ["#a"]
[networks.operators]
accounts = ["alice"]
[networks.policy]
channel_burst = 9

[[networks]]
name = "oftc"
[networks.irc]
host = "irc.oftc.net"
nick = "relaybot2"
[networks.reply]
max_lines = 5
"""


def test_two_networks_inherit_the_top_level_tables_key_by_key() -> None:
    config = loads_config(TWO)
    libera, oftc = config.networks
    assert [libera.name, oftc.name] == ["libera", "oftc"]
    assert libera.irc.network == "libera" and oftc.irc.network == "oftc"
    assert libera.irc.host == "irc.libera.chat" and oftc.irc.nick == "relaybot2"
    # A network's own key wins; the rest of the table comes from the top level.
    assert libera.policy.channel_burst == 9 and libera.policy.cooldown == 7.0
    assert oftc.policy.cooldown == 7.0 and oftc.policy.channel_burst != 9
    assert libera.reply.max_lines == 2 and oftc.reply.max_lines == 5
    # Operators are the network's own; the prefix may be shared.
    assert libera.operators.accounts == ("alice",) and oftc.operators.accounts == ()
    assert libera.operators.prefix == oftc.operators.prefix == "!bot"
    assert config.network("oftc") is oftc


def test_one_network_file_is_unchanged() -> None:
    config = loads_config('[irc]\nhost = "h"\nnick = "n"\nnetwork = "x"\n[policy]\ncooldown = 3\n')
    (only,) = config.networks
    assert only.name == "x" and only.policy.cooldown == 3.0


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            '[irc]\nhost = "h"\nnick = "n"\n[[networks]]\nname = "a"\n'
            '[networks.irc]\nhost = "h"\nnick = "n"\n',
            "irc: give either [irc] (one network) or [[networks]]",
        ),
        ("[model]\n", "irc: missing"),
        ("networks = []\n", "networks: expected an array of tables"),
        ('[[networks]]\n[networks.irc]\nhost = "h"\nnick = "n"\n', "networks[0].name: missing"),
        ('[[networks]]\nname = "a/b"\n', "networks[0].name: 'a/b' must be letters"),
        ('[[networks]]\nname = "a"\n', "networks[0].irc: missing"),
        (
            '[[networks]]\nname = "a"\n[networks.irc]\nhost = "h"\nnick = "n"\n'
            '[[networks]]\nname = "A"\n[networks.irc]\nhost = "h"\nnick = "n"\n',
            "networks[1].name: 'A' is also networks[0]'s name",
        ),
        (
            '[[networks]]\nname = "a"\n[networks.irc]\nhost = "h"\nnick = "n"\nnetwork = "b"\n',
            "networks[0].irc.network: 'b' differs from networks[0].name",
        ),
        (
            '[operators]\naccounts = ["alice"]\n'
            '[[networks]]\nname = "a"\n[networks.irc]\nhost = "h"\nnick = "n"\n',
            "operators.accounts: with [[networks]], operators are per network",
        ),
        (
            '[operators]\nhostmasks = ["a!b@c"]\n'
            '[[networks]]\nname = "a"\n[networks.irc]\nhost = "h"\nnick = "n"\n',
            "operators.hostmasks: with [[networks]], operators are per network",
        ),
        (
            "[policy]\ncooldown = -1\n"
            '[[networks]]\nname = "a"\n[networks.irc]\nhost = "h"\nnick = "n"\n',
            "policy.cooldown: must be at least",
        ),
        (
            '[[networks]]\nname = "a"\n[networks.irc]\nhost = "h"\nnick = "n"\n'
            "[networks.policy]\ncooldown = -1\n",
            "networks[0].policy.cooldown: must be at least",
        ),
        (
            '[[networks]]\nname = "a"\ncolour = "red"\n[networks.irc]\nhost = "h"\nnick = "n"\n',
            "networks[0].colour: unknown key",
        ),
        (
            '[[networks]]\nname = "a"\n[networks.irc]\nhost = "h"\nnick = "n"\n'
            '[networks.operators]\naccounts = ["*"]\n',
            "networks[0].operators.accounts[0]: '*' matches any account",
        ),
    ],
)
def test_mistakes_name_the_key(text: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        loads_config(text)
    assert str(caught.value).startswith(message), str(caught.value)


def test_the_readme_example_loads() -> None:
    readme = (REPO / "README.md").read_text()
    section = readme.split("### Several networks", 1)[1]
    example = section.split("```toml", 1)[1].split("```", 1)[0]
    config = loads_config(example)
    assert [net.name for net in config.networks] == ["libera", "oftc"]
    libera, oftc = config.networks
    assert libera.operators.accounts == ("alice",) and oftc.operators.accounts == ()
    assert libera.policy.channel_burst == 10 and oftc.policy.cooldown == 2.0


def test_an_inherited_table_is_named_where_it_was_written() -> None:
    config = loads_config(
        '[[moderation.hooks]]\nuse = "words"\n'
        '[[networks]]\nname = "a"\n[networks.irc]\nhost = "h"\nnick = "n"\n'
        '[[networks]]\nname = "b"\n[networks.irc]\nhost = "h"\nnick = "n"\n'
        "[networks.moderation]\ntimeout = 1.0\n"
    )
    a, b = config.networks
    # Hooks report later problems (a module that will not load) under this path.
    assert a.moderation.hooks[0].where == "moderation.hooks[0]"
    assert b.moderation.hooks[0].where == "networks[1].moderation.hooks[0]"
    assert b.moderation.timeout == 1.0 and a.moderation.timeout == 2.0
