"""Unit tests for the config (relaybot.config.schema, read by relaybot.config.loader) and
`relaybot check-config`: errors name the key path."""

from __future__ import annotations

import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest

from relaybot.cli.main import main
from relaybot.config.loader import load_config, loads_config, redacted
from relaybot.config.schema import (
    ChannelConfig,
    Config,
    ConfigError,
    IrcConfig,
    ModelConfig,
    NetworkConfig,
    ReplyConfig,
    Secret,
)
from tests.support.paths import REPO

MINIMAL = """
[irc]
host = "irc.example.net"
nick = "relaybot"
"""

Factory = Callable[..., Config]


@pytest.fixture
def write_config(tmp_path: Path) -> Callable[..., Path]:
    def write(toml: str, name: str = "bot.toml", subdir: str = "") -> Path:
        folder = tmp_path / subdir if subdir else tmp_path
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / name
        path.write_text(textwrap.dedent(toml), encoding="utf-8")
        return path

    return write


@pytest.fixture
def config_factory(write_config: Callable[..., Path]) -> Factory:
    """TOML text -> Config, loaded from a real file in tmp_path (so relative paths resolve)."""

    def factory(toml: str, **kwargs: str) -> Config:
        return load_config(write_config(toml, **kwargs))

    return factory


def config_error(factory: Factory, toml: str) -> str:
    with pytest.raises(ConfigError) as info:
        factory(toml)
    return str(info.value)


# --- valid configs ----------------------------------------------------------------------------


def test_minimal_config(config_factory: Factory):
    config = config_factory(MINIMAL)
    assert config == Config(
        networks=(NetworkConfig(irc=IrcConfig(host="irc.example.net", nick="relaybot")),)
    )
    assert config.networks[0].irc.port == 6667
    assert config.networks[0].irc.network == "default"
    assert config.networks[0].irc.channels == ()
    assert config.networks[0].irc.password is None
    assert config.networks[0].irc.sasl is None
    assert config.networks[0].reply == ReplyConfig()
    assert config.model == ModelConfig()


def test_fuller_config(config_factory: Factory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("RELAYBOT_TEST_SASL", "hunter2")
    (tmp_path / "key.txt").write_text("chankey\n")
    config = config_factory(
        """
        [irc]
        host = "irc.example.net"
        nick = "relaybot"
        network = "libera"
        tls = true
        alt_nicks = ["relaybot_", "rbot"]
        channels = ["#one", { name = "#two", key_file = "key.txt" }]
        invite_from = ["*!*@trusted.example"]

        [irc.sasl]
        username = "relayacct"
        password_env = "RELAYBOT_TEST_SASL"

        [reply]
        chance = 1
        max_lines = 5

        [model]
        device = "cuda"
        context_tokens = 4096
        max_new_tokens = 256
        seed = 7

        [log]
        level = "debug"
        """
    )
    assert config.networks[0].irc.port == 6697  # TLS default
    assert config.networks[0].irc.network == "libera"
    assert config.networks[0].irc.alt_nicks == ("relaybot_", "rbot")
    assert config.networks[0].irc.channels == (
        ChannelConfig("#one"),
        ChannelConfig("#two", Secret("chankey")),
    )
    assert config.networks[0].irc.sasl is not None
    assert config.networks[0].irc.sasl.username == "relayacct"
    assert config.networks[0].irc.sasl.password.value == "hunter2"
    assert config.networks[0].reply.chance == 1.0 and isinstance(
        config.networks[0].reply.chance, float
    )
    assert config.networks[0].reply.max_lines == 5
    assert config.model.device == "cuda"
    assert config.model.max_new_tokens == 256
    assert config.model.seed == 7
    assert config.log.level == "debug"


def test_loads_config_uses_base_dir(tmp_path: Path):
    (tmp_path / "pw").write_text("secret\n")
    config = loads_config(MINIMAL + 'password_file = "pw"\n', base_dir=tmp_path)
    assert config.networks[0].irc.password == Secret("secret")


# --- errors name the key path ------------------------------------------------------------------


def test_unknown_top_level_key(config_factory: Factory):
    message = config_error(config_factory, 'colour = "blue"\n' + MINIMAL)
    assert message.startswith("colour: unknown key")


def test_unknown_nested_key(config_factory: Factory):
    message = config_error(config_factory, MINIMAL + "prot = 6667\n")
    assert message.startswith("irc.prot: unknown key")


def test_unknown_key_in_model_table(config_factory: Factory):
    message = config_error(config_factory, MINIMAL + "[model]\ntemprature = 0.5\n")
    assert message.startswith("model.temprature: unknown key")


def test_unknown_key_in_sasl_table(config_factory: Factory, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("RELAYBOT_TEST_SASL", "pw")
    message = config_error(
        config_factory,
        MINIMAL
        + '[irc.sasl]\nusername = "a"\npassword_env = "RELAYBOT_TEST_SASL"\nmech = "PLAIN"\n',
    )
    assert message.startswith("irc.sasl.mech: unknown key")


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        ('port = "6667"', "irc.port: expected an integer, got string"),
        ("port = 6667.0", "irc.port: expected an integer, got number"),
        ("port = true", "irc.port: expected an integer, got boolean"),
        ('tls = "yes"', "irc.tls: expected a boolean, got string"),
        ('alt_nicks = "rbot"', "irc.alt_nicks: expected an array of strings"),
        ('channels = "#chan"', "irc.channels: expected an array, got string"),
        ("channels = [1]", "irc.channels[0]: expected a string or a table, got integer"),
        ("port = 70000", "irc.port: must be between 1 and 65535, got 70000"),
    ],
)
def test_wrong_types_in_irc(config_factory: Factory, extra: str, expected: str):
    assert config_error(config_factory, MINIMAL + extra + "\n").startswith(expected)


def test_wrong_type_nested_table(config_factory: Factory):
    message = config_error(config_factory, MINIMAL + "[reply]\nmax_lines = 0\n")
    assert message.startswith("reply.max_lines: must be between 1 and 20, got 0")
    message = config_error(config_factory, MINIMAL + '[reply]\nchance = "often"\n')
    assert message.startswith("reply.chance: expected a number, got string")


def test_section_that_is_not_a_table(config_factory: Factory):
    assert config_error(config_factory, 'irc = "x"\n').startswith("irc: expected a table")
    message = config_error(config_factory, 'model = "big"\n' + MINIMAL)
    assert message.startswith("model: expected a table, got string")


def test_missing_irc_table(config_factory: Factory):
    assert config_error(config_factory, "[model]\n").startswith("irc: missing")
    assert config_error(config_factory, "").startswith("irc: missing")


def test_missing_irc_host(config_factory: Factory):
    message = config_error(config_factory, '[irc]\nnick = "relaybot"\n')
    assert message.startswith("irc.host: missing")


def test_missing_irc_nick(config_factory: Factory):
    message = config_error(config_factory, '[irc]\nhost = "irc.example.net"\n')
    assert message.startswith("irc.nick: missing")


@pytest.mark.parametrize("nick", ["", "1bot", "-bot", "re lay", "bot!x", "bot@x", "#bot"])
def test_invalid_nick(config_factory: Factory, nick: str):
    message = config_error(config_factory, f'[irc]\nhost = "h"\nnick = "{nick}"\n')
    assert message.startswith("irc.nick:")
    assert "not a valid nick" in message or "must not be empty" in message


def test_invalid_alt_nick_names_its_index(config_factory: Factory):
    message = config_error(config_factory, MINIMAL + 'alt_nicks = ["ok", "not ok"]\n')
    assert message.startswith("irc.alt_nicks[1]:")


@pytest.mark.parametrize("channel", ["chan", "#a b", "#a,b", "#"])
def test_bad_channel_name(config_factory: Factory, channel: str):
    message = config_error(config_factory, MINIMAL + f'channels = ["#ok", "{channel}"]\n')
    assert message.startswith("irc.channels[1]:")
    assert repr(channel) in message and "not a valid channel name" in message


def test_bad_channel_name_in_table_form(config_factory: Factory):
    message = config_error(config_factory, MINIMAL + 'channels = [{ name = "nochan" }]\n')
    assert message.startswith("irc.channels[0]:")


def test_channel_table_requires_name(config_factory: Factory):
    message = config_error(config_factory, MINIMAL + 'channels = [{ nmae = "#x" }]\n')
    assert message.startswith("irc.channels[0].name: missing")


def test_unreadable_password_file(config_factory: Factory, tmp_path: Path):
    message = config_error(config_factory, MINIMAL + 'password_file = "does-not-exist.txt"\n')
    assert message.startswith("irc.password_file: cannot read")
    assert str(tmp_path / "does-not-exist.txt") in message


def test_empty_password_file(config_factory: Factory, tmp_path: Path):
    (tmp_path / "empty").write_text("\n")
    message = config_error(config_factory, MINIMAL + 'password_file = "empty"\n')
    assert message.startswith("irc.password_file:") and "empty" in message


def test_inline_secret_refused(config_factory: Factory):
    message = config_error(config_factory, MINIMAL + 'password = "x"\n')
    assert message.startswith("irc.password: secrets are not accepted inline")
    assert "password_file" in message and "password_env" in message


def test_inline_channel_key_refused(config_factory: Factory):
    message = config_error(config_factory, MINIMAL + 'channels = [{ name = "#a", key = "k" }]\n')
    assert message.startswith("irc.channels[0].key: secrets are not accepted inline")


def test_env_secret_missing(config_factory: Factory, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv("RELAYBOT_TEST_UNSET", raising=False)
    message = config_error(config_factory, MINIMAL + 'password_env = "RELAYBOT_TEST_UNSET"\n')
    assert message.startswith("irc.password_env:")
    assert "RELAYBOT_TEST_UNSET" in message and "not set" in message


def test_env_secret_present(config_factory: Factory, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("RELAYBOT_TEST_PW", "s3cret")
    config = config_factory(MINIMAL + 'password_env = "RELAYBOT_TEST_PW"\n')
    assert config.networks[0].irc.password == Secret("s3cret")


def test_file_and_env_secret_together_refused(
    config_factory: Factory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setenv("RELAYBOT_TEST_PW", "s3cret")
    (tmp_path / "pw").write_text("x")
    message = config_error(
        config_factory, MINIMAL + 'password_file = "pw"\npassword_env = "RELAYBOT_TEST_PW"\n'
    )
    assert message.startswith("irc.password_file:")


def test_sasl_without_password(config_factory: Factory):
    message = config_error(config_factory, MINIMAL + '[irc.sasl]\nusername = "acct"\n')
    assert message.startswith("irc.sasl.password")
    assert "password_file" in message


def test_sasl_without_username(config_factory: Factory, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("RELAYBOT_TEST_PW", "s3cret")
    message = config_error(
        config_factory, MINIMAL + '[irc.sasl]\npassword_env = "RELAYBOT_TEST_PW"\n'
    )
    assert message.startswith("irc.sasl.username: missing")


@pytest.mark.parametrize("max_new", [256, 1000])
def test_max_new_tokens_must_be_below_context(config_factory: Factory, max_new: int):
    message = config_error(
        config_factory, MINIMAL + f"[model]\ncontext_tokens = 256\nmax_new_tokens = {max_new}\n"
    )
    assert message.startswith("model.max_new_tokens:")
    assert "context_tokens" in message


def test_max_new_tokens_just_below_context_is_fine(config_factory: Factory):
    config = config_factory(MINIMAL + "[model]\ncontext_tokens = 256\nmax_new_tokens = 255\n")
    assert config.model.max_new_tokens == 255


@pytest.mark.parametrize(
    ("table", "key", "value"),
    [
        ("model", "device", "tpu"),
        ("model", "dtype", "int3"),
        ("model", "quantization", "2bit"),
        ("log", "level", "verbose"),
        ("log", "format", "xml"),
    ],
)
def test_bad_choice_value(config_factory: Factory, table: str, key: str, value: str):
    message = config_error(config_factory, MINIMAL + f'[{table}]\n{key} = "{value}"\n')
    assert message.startswith(f"{table}.{key}: must be one of")
    assert repr(value) in message


def test_bad_choice_lists_options(config_factory: Factory):
    message = config_error(config_factory, MINIMAL + '[model]\ndevice = "tpu"\n')
    assert message == "model.device: must be one of auto, cpu, cuda, got 'tpu'"


def test_invalid_toml_is_a_config_error(config_factory: Factory):
    assert "not valid TOML" in config_error(config_factory, "[irc\nhost=")


def test_missing_config_file(tmp_path: Path):
    with pytest.raises(ConfigError, match="cannot read config file"):
        load_config(tmp_path / "nope.toml")


# --- relative paths ----------------------------------------------------------------------------


def test_relative_secret_file_resolved_against_config_dir(
    config_factory: Factory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    confdir = tmp_path / "etc" / "relaybot"
    confdir.mkdir(parents=True)
    (confdir / "irc-password").write_text("from-config-dir\n")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "irc-password").write_text("from-cwd\n")
    monkeypatch.chdir(elsewhere)
    config = config_factory(MINIMAL + 'password_file = "irc-password"\n', subdir="etc/relaybot")
    assert config.networks[0].irc.password is not None
    assert config.networks[0].irc.password.value == "from-config-dir"


def test_relative_secret_file_in_subfolder(config_factory: Factory, tmp_path: Path):
    (tmp_path / "conf" / "secrets").mkdir(parents=True)
    (tmp_path / "conf" / "secrets" / "sasl").write_text("pw\r\n")
    config = config_factory(
        MINIMAL + '[irc.sasl]\nusername = "a"\npassword_file = "secrets/sasl"\n', subdir="conf"
    )
    assert config.networks[0].irc.sasl is not None
    assert config.networks[0].irc.sasl.password.value == "pw"  # CR/LF stripped


def test_absolute_secret_file_used_as_is(config_factory: Factory, tmp_path: Path):
    secret = tmp_path / "abs-secret"
    secret.write_text("abs")
    config = config_factory(MINIMAL + f'password_file = "{secret}"\n', subdir="conf")
    assert config.networks[0].irc.password == Secret("abs")


def test_relative_ca_file_resolved_against_config_dir(
    config_factory: Factory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    (tmp_path / "conf").mkdir()
    (tmp_path / "conf" / "ca.pem").write_text("-----BEGIN CERTIFICATE-----\n")
    monkeypatch.chdir(tmp_path)
    config = config_factory(MINIMAL + 'ca_file = "ca.pem"\n', subdir="conf")
    assert config.networks[0].irc.ca_file == str(tmp_path / "conf" / "ca.pem")


def test_missing_ca_file(config_factory: Factory):
    message = config_error(config_factory, MINIMAL + 'ca_file = "nope.pem"\n')
    assert message.startswith("irc.ca_file:")


# --- secrets never leak --------------------------------------------------------------------------

SECRET_VALUES = ("irc-pass-123", "sasl-pass-456", "chan-key-789")


@pytest.fixture
def secret_config(config_factory: Factory, tmp_path: Path) -> Config:
    (tmp_path / "irc").write_text(SECRET_VALUES[0])
    (tmp_path / "sasl").write_text(SECRET_VALUES[1])
    (tmp_path / "key").write_text(SECRET_VALUES[2])
    return config_factory(
        MINIMAL
        + 'password_file = "irc"\n'
        + 'channels = [{ name = "#secret", key_file = "key" }]\n'
        + '[irc.sasl]\nusername = "acct"\npassword_file = "sasl"\n'
    )


def test_secrets_loaded(secret_config: Config):
    assert secret_config.networks[0].irc.password is not None
    assert secret_config.networks[0].irc.password.value == SECRET_VALUES[0]
    assert secret_config.networks[0].irc.sasl is not None
    assert secret_config.networks[0].irc.sasl.password.value == SECRET_VALUES[1]
    key = secret_config.networks[0].irc.channels[0].key
    assert key is not None and key.value == SECRET_VALUES[2]


def test_secret_not_in_repr(secret_config: Config):
    for text in (repr(secret_config), str(secret_config), repr(secret_config.networks[0].irc)):
        for value in SECRET_VALUES:
            assert value not in text
    assert "***" in repr(secret_config)


def test_secret_repr_and_str():
    secret = Secret("topsecret")
    assert "topsecret" not in repr(secret)
    assert "topsecret" not in str(secret)
    assert "topsecret" not in f"{secret}"


def test_secret_not_in_redacted(secret_config: Config):
    view = redacted(secret_config)
    assert isinstance(view, dict)
    for value in SECRET_VALUES:
        assert value not in repr(view)
    irc = view["networks"][0]["irc"]
    assert irc["password"] == "***"
    assert irc["sasl"]["password"] == "***"
    assert irc["channels"][0] == {"name": "#secret", "key": "***"}
    assert irc["host"] == "irc.example.net"


# --- CLI check-config ---------------------------------------------------------------------------


def test_cli_check_config_ok(write_config: Callable[..., Path], capsys: pytest.CaptureFixture):
    path = write_config(MINIMAL + 'channels = ["#a", "#b"]\n')
    assert main(["check-config", str(path)]) == 0
    out, err = capsys.readouterr()
    assert "OK" in out
    assert "relaybot on irc.example.net:6667" in out
    assert "#a, #b" in out
    assert err == ""


def test_cli_check_config_bad(write_config: Callable[..., Path], capsys: pytest.CaptureFixture):
    path = write_config(MINIMAL + '[model]\ndevice = "tpu"\n')
    assert main(["check-config", str(path)]) == 2
    out, err = capsys.readouterr()
    assert "model.device" in err
    assert "OK" not in out


def test_cli_check_config_unknown_key(
    write_config: Callable[..., Path], capsys: pytest.CaptureFixture
):
    path = write_config(MINIMAL + "prot = 1\n")
    assert main(["check-config", str(path)]) == 2
    assert "irc.prot: unknown key" in capsys.readouterr().err


def test_cli_check_config_missing_file(tmp_path: Path, capsys: pytest.CaptureFixture):
    assert main(["check-config", str(tmp_path / "nope.toml")]) == 2
    assert "nope.toml" in capsys.readouterr().err


def test_cli_check_config_does_not_print_secrets(
    write_config: Callable[..., Path], tmp_path: Path, capsys: pytest.CaptureFixture
):
    (tmp_path / "pw").write_text("do-not-print-me")
    path = write_config(MINIMAL + 'password_file = "pw"\n')
    assert main(["check-config", str(path)]) == 0
    out, err = capsys.readouterr()
    assert "do-not-print-me" not in out + err


def test_empty_host_is_refused(config_factory: Factory):
    message = config_error(config_factory, '[irc]\nhost = ""\nnick = "relaybot"\n')
    assert message.startswith("irc.host:")


def test_example_config_loads_and_shows_the_real_defaults():
    from relaybot.config.loader import load_config
    from relaybot.config.schema import FloodConfig, MetricsConfig, OperatorConfig, PolicyConfig

    example = REPO / "config.example.toml"
    config = load_config(example)
    assert config.networks[0].policy == PolicyConfig()
    assert config.networks[0].irc.flood == FloodConfig()
    assert config.networks[0].operators == OperatorConfig()
    assert (
        config.networks[0].moderation.timeout == 2.0 and config.networks[0].moderation.hooks == ()
    )
    assert config.metrics == MetricsConfig()


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        ("[policy]\nuser_burst = 0\n", "policy.user_burst: must be at least 1, got 0"),
        ('[policy]\ncooldown = "soon"\n', "policy.cooldown: expected a number, got string"),
        ('[policy]\nignore = ["bad mask"]\n', "policy.ignore[0]: 'bad mask' is not a valid mask"),
        ('[policy]\nignore = ["$a:"]\n', "policy.ignore[0]: $a: needs an account name"),
        ("[policy]\nloudness = 3\n", "policy.loudness: unknown key"),
        ('[operators]\nprefix = "! relay"\n', "operators.prefix: '! relay' must be a non-empty"),
        ('[operators]\nhostmasks = ["alice"]\n', "operators.hostmasks[0]: 'alice' must be a full"),
        (
            '[operators]\nhostmasks = ["alice!*@*"]\n',
            "operators.hostmasks[0]: 'alice!*@*' matches any user@host, so it would trust a nick",
        ),
        ("[moderation]\nhooks = 3\n", "moderation.hooks: expected an array of tables"),
        ("[[moderation.hooks]]\nwords = []\n", "moderation.hooks[0].use: missing"),
        ("[moderation]\ntimeout = 0\n", "moderation.timeout: must be between 0.01 and 600"),
        ("[irc.flood]\nburst = 0\n", "irc.flood.burst: must be between 1 and 100, got 0"),
        ("[state]\nflush_interval = 0\n", "state.flush_interval: must be between 0.1 and 3600"),
    ],
)
def test_policy_operator_moderation_state_errors_name_the_key(
    config_factory: Factory, extra: str, expected: str
):
    assert config_error(config_factory, MINIMAL + extra).startswith(expected)


def test_state_dir_is_relative_to_the_config_file(config_factory: Factory, tmp_path: Path):
    config = config_factory(MINIMAL + '[state]\ndir = "state"\n')
    assert config.state.dir == str(tmp_path / "state")


def test_moderation_hooks_keep_their_options_and_key_path(config_factory: Factory):
    config = config_factory(
        MINIMAL + '[[moderation.hooks]]\nuse = "words"\nwords = ["x"]\n'
        '[[moderation.hooks]]\nuse = "classifier"\nmodel = "guard"\nblock_labels = ["bad"]\n'
    )
    first, second = config.networks[0].moderation.hooks
    assert (first.use, dict(first.options), first.where) == (
        "words",
        {"words": ["x"]},
        "moderation.hooks[0]",
    )
    assert second.options["model"].endswith("/guard") and second.where == "moderation.hooks[1]"


def test_model_format_is_one_of_the_known_formats(config_factory: Factory):
    assert config_factory(MINIMAL).model.format == "relay"
    assert config_factory(MINIMAL + '[model]\nformat = "vicuna"\n').model.format == "vicuna"
    message = config_error(config_factory, MINIMAL + '[model]\nformat = "gpt9"\n')
    assert message.startswith("model.format: must be one of alpaca, chatml, llama2, llama3,")


def test_prefix_cache_keys(config_factory) -> None:
    irc = '[irc]\nhost = "127.0.0.1"\nnick = "bot"\n'
    model = config_factory(irc + "[model]\nprefix_cache_entries = 0\nprefix_cache_mib = 64\n").model
    assert (model.prefix_cache_entries, model.prefix_cache_mib) == (0, 64)
    with pytest.raises(ConfigError, match=r"model\.prefix_cache_mib: must be at least 1"):
        config_factory(irc + "[model]\nprefix_cache_mib = 0\n")


def test_attention_and_warmup_keys(config_factory) -> None:
    irc = '[irc]\nhost = "h"\nnick = "n"\n'
    model = config_factory(irc).model
    assert (model.attention, model.warmup) == ("auto", True)
    model = config_factory(irc + '[model]\nattention = "eager"\nwarmup = false\n').model
    assert (model.attention, model.warmup) == ("eager", False)
    with pytest.raises(ConfigError, match=r"model\.attention"):
        config_factory(irc + '[model]\nattention = "flash"\n')


def test_attention_implementation_choice() -> None:
    from relaybot.inference.local.loading import attention_implementation
    from relaybot.inference.selection import ModelUnavailable

    assert attention_implementation("auto", "cpu") == "sdpa"
    assert attention_implementation("auto", "cuda") == "sdpa"
    assert attention_implementation("eager", "cpu") == "eager"
    with pytest.raises(ModelUnavailable, match=r"needs model\.device cuda"):
        attention_implementation("flash_attention_2", "cpu")


# --- what cannot work is refused at load -------------------------------------------------------

FLOAT_KEYS = (
    "model.temperature",
    "model.top_p",
    "model.remote.timeout",
    "irc.ping_interval",
    "irc.rejoin_delay",
    "irc.connect_timeout",
    "irc.flood.interval",
    "reply.chance",
    "policy.cooldown",
    "policy.user_per_minute",
    "moderation.timeout",
    "state.flush_interval",
)


def _with_key(dotted: str, value: str) -> str:
    table, _, leaf = dotted.rpartition(".")
    if table == "irc":
        return MINIMAL + f"{leaf} = {value}\n"
    return MINIMAL + f"[{table}]\n{leaf} = {value}\n"


@pytest.mark.parametrize("value", ["nan", "+nan", "-nan", "inf", "+inf", "-inf"])
@pytest.mark.parametrize("key", FLOAT_KEYS)
def test_non_finite_floats_are_refused(config_factory: Factory, key: str, value: str):
    message = config_error(config_factory, _with_key(key, value))
    assert message.startswith(f"{key}: must be a finite number, got ")


def test_finite_floats_still_load(config_factory: Factory):
    config = config_factory(_with_key("irc.ping_interval", "30.5"))
    assert config.networks[0].irc.ping_interval == 30.5
    assert config_factory(_with_key("reply.chance", "1")).networks[0].reply.chance == 1.0


@pytest.mark.parametrize(
    "url",
    [
        "http://host:99999/v1",
        "http://host:abc/v1",
        "http://host:0/v1",
        "http://host:-1/v1",
        "ftp://host/v1",
        "host:8000",
        "http:///v1",
        "http://",
        "http://host:8000/v1?key=x",
        "http://host:8000/v1#frag",
        "http://ho st:8000/v1",
        "http://[::1/v1",
        "http://[::1]:8000:9/v1",
    ],
)
def test_remote_url_is_validated_at_load(config_factory: Factory, url: str):
    message = config_error(config_factory, MINIMAL + f'[model.remote]\nurl = "{url}"\n')
    assert message.startswith("model.remote.url: ")
    assert repr(url.rstrip("/")) in message


@pytest.mark.parametrize(
    "url",
    ["http://host:8000/v1", "https://host/v1/", "http://[::1]:65535", "http://127.0.0.1:1"],
)
def test_good_remote_urls_load(config_factory: Factory, url: str):
    config = config_factory(MINIMAL + f'[model.remote]\nurl = "{url}"\n')
    assert config.model.remote.url == url.rstrip("/")


@pytest.mark.parametrize("command", ["check-config", "run"])
@pytest.mark.parametrize("url", ["http://host:99999/v1", "http://host:abc/v1"])
def test_cli_bad_remote_url_exits_2_naming_the_key(
    write_config: Callable[..., Path], capsys: pytest.CaptureFixture, command: str, url: str
):
    path = write_config(MINIMAL + f'[model]\nengine = "openai"\n[model.remote]\nurl = "{url}"\n')
    argv = (
        ["check-config", str(path)] if command == "check-config" else ["run", "--config", str(path)]
    )
    assert main(argv) == 2
    out, err = capsys.readouterr()
    assert "config error: model.remote.url:" in err
    assert "OK" not in out


def test_remote_models_load_in_order(config_factory: Factory):
    config = config_factory(MINIMAL + '[model.remote]\nmodels = ["org/b-7b", "c:latest"]\n')
    assert config.model.remote.models == ("org/b-7b", "c:latest")
    assert config_factory(MINIMAL).model.remote.models == ()


@pytest.mark.parametrize(
    ("models", "problem"),
    [
        ('["a b"]', "a model name must be one word, got 'a b'"),
        ('[""]', "a model name must be one word, got ''"),
        ('["a\\u0007"]', "a model name must be one word, got 'a\\x07'"),
        ('["a", "b", "a"]', "names 'a' more than once"),
        ('"a"', "expected an array of strings"),
    ],
)
def test_bad_remote_models_are_refused(config_factory: Factory, models: str, problem: str):
    message = config_error(config_factory, MINIMAL + f"[model.remote]\nmodels = {models}\n")
    assert message.startswith("model.remote.models: ")
    assert problem in message


def test_remote_ca_file_must_exist(config_factory: Factory, tmp_path: Path):
    message = config_error(config_factory, MINIMAL + '[model.remote]\nca_file = "nope.pem"\n')
    assert message.startswith("model.remote.ca_file: ")
    assert str(tmp_path / "nope.pem") in message
    (tmp_path / "dir.pem").mkdir()
    message = config_error(config_factory, MINIMAL + '[model.remote]\nca_file = "dir.pem"\n')
    assert message.startswith("model.remote.ca_file: ")


def test_remote_ca_file_resolved_and_kept(config_factory: Factory, tmp_path: Path):
    (tmp_path / "ca.pem").write_text("-----BEGIN CERTIFICATE-----\n")
    config = config_factory(MINIMAL + '[model.remote]\nca_file = "ca.pem"\n')
    assert config.model.remote.ca_file == str(tmp_path / "ca.pem")


def test_cli_check_config_missing_remote_ca_file(
    write_config: Callable[..., Path], capsys: pytest.CaptureFixture
):
    path = write_config(MINIMAL + '[model.remote]\nca_file = "nope.pem"\n')
    assert main(["check-config", str(path)]) == 2
    assert "model.remote.ca_file:" in capsys.readouterr().err


def test_irc_ca_file_expands_home_and_variables(
    config_factory: Factory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    home = tmp_path / "home"
    (home / "certs").mkdir(parents=True)
    (home / "certs" / "ca.pem").write_text("-----BEGIN CERTIFICATE-----\n")
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("RELAYBOT_TEST_CERTS", str(home / "certs"))
    config = config_factory(MINIMAL + 'ca_file = "~/certs/ca.pem"\n', subdir="conf")
    assert config.networks[0].irc.ca_file == str(home / "certs" / "ca.pem")
    config = config_factory(MINIMAL + 'ca_file = "$RELAYBOT_TEST_CERTS/ca.pem"\n', subdir="conf")
    assert config.networks[0].irc.ca_file == str(home / "certs" / "ca.pem")
    config = config_factory(MINIMAL + 'ca_file = "${RELAYBOT_TEST_CERTS}/ca.pem"\n', subdir="conf")
    assert config.networks[0].irc.ca_file == str(home / "certs" / "ca.pem")


@pytest.mark.parametrize("table", ["[irc]", "[model.remote]"])
def test_every_file_path_key_expands_alike(
    config_factory: Factory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, table: str
):
    (tmp_path / "home").mkdir()
    (tmp_path / "home" / "ca.pem").write_text("-----BEGIN CERTIFICATE-----\n")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    body = 'ca_file = "~/ca.pem"\n'
    toml = MINIMAL + body if table == "[irc]" else MINIMAL + f"{table}\n{body}"
    config = config_factory(toml)
    got = config.networks[0].irc.ca_file if table == "[irc]" else config.model.remote.ca_file
    assert got == str(tmp_path / "home" / "ca.pem")


@pytest.mark.parametrize("account", ["*", "?*", "**", "*?*", "*??", "$a:*", "$a:?*", "?", "??"])
def test_catch_all_operator_accounts_are_refused(config_factory: Factory, account: str):
    message = config_error(
        config_factory, MINIMAL + f'[operators]\naccounts = ["alice", "{account}"]\n'
    )
    assert message.startswith(f"operators.accounts[1]: {account!r} matches any account")


@pytest.mark.parametrize("account", ["alice", "ops-*", "*-admin", "$a:bob", "a?ice"])
def test_narrow_operator_accounts_load(config_factory: Factory, account: str):
    config = config_factory(MINIMAL + f'[operators]\naccounts = ["{account}"]\n')
    assert config.networks[0].operators.accounts == (account,)


@pytest.mark.parametrize("mask", ["*!*@*", "nick!*@*", "?!?*@*?", "*!**@**"])
def test_catch_all_hostmasks_still_refused(config_factory: Factory, mask: str):
    message = config_error(config_factory, MINIMAL + f'[operators]\nhostmasks = ["{mask}"]\n')
    assert message.startswith(f"operators.hostmasks[0]: {mask!r} matches any user@host")


def test_max_concurrent_follows_max_batch_unless_set(
    config_factory: Callable[[str], Config],
) -> None:
    base = '[irc]\nhost = "irc.example.org"\nnick = "bot"\n'
    assert (
        config_factory(base).networks[0].policy.max_concurrent
        == config_factory(base).model.max_batch
    )
    assert (
        config_factory(base + "[model]\nmax_batch = 16\n").networks[0].policy.max_concurrent == 16
    )
    both = base + "[model]\nmax_batch = 16\n[policy]\nmax_concurrent = 2\n"
    assert config_factory(both).networks[0].policy.max_concurrent == 2


def test_the_shipped_example_lets_every_reply_share_one_batch() -> None:

    from relaybot.config.loader import load_config

    example = load_config(REPO / "config.example.toml")
    assert example.networks[0].policy.max_concurrent >= example.model.max_batch
