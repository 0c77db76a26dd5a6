"""`[metrics]`: off and on loopback unless the file says otherwise; bad values name the key."""

from __future__ import annotations

import pytest

from relaybot.config.loader import loads_config
from relaybot.config.schema import ConfigError, MetricsConfig

MINIMAL = '[irc]\nhost = "irc.example.net"\nnick = "relaybot"\n'


def test_the_endpoint_is_off_and_on_loopback_by_default() -> None:
    config = loads_config(MINIMAL).metrics
    assert not config.enabled
    assert config.address == "127.0.0.1"


def test_every_key_is_read() -> None:
    text = MINIMAL + '[metrics]\nenabled = true\naddress = "::1"\nport = 0\nmax_channels = 0\n'
    assert loads_config(text).metrics == MetricsConfig(
        enabled=True, address="::1", port=0, max_channels=0
    )


def test_a_non_loopback_address_is_taken_when_given() -> None:
    config = loads_config(MINIMAL + '[metrics]\naddress = "0.0.0.0"\n').metrics
    assert config.address == "0.0.0.0"


@pytest.mark.parametrize(
    ("table", "expected"),
    [
        ('address = "localhost"', "metrics.address: 'localhost' is not an IP address"),
        ('address = ""', "metrics.address: '' is not an IP address"),
        ("address = 127", "metrics.address: expected a string, got integer"),
        ("port = 65536", "metrics.port: must be between 0 and 65535, got 65536"),
        ("port = -1", "metrics.port: must be between 0 and 65535, got -1"),
        ('enabled = "yes"', "metrics.enabled: expected a boolean, got string"),
        ("max_channels = -1", "metrics.max_channels: must be between 0 and 10000, got -1"),
        ("path = '/metrics'", "metrics.path: unknown key"),
    ],
)
def test_bad_values_name_the_key(table: str, expected: str) -> None:
    with pytest.raises(ConfigError) as caught:
        loads_config(f"{MINIMAL}[metrics]\n{table}\n")
    assert str(caught.value).startswith(expected)
