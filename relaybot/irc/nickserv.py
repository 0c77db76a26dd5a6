"""The NickServ IDENTIFY fallback: once registered, a bot that SASL did not log in identifies
to services the old way, once per connection. Decides whether, and makes the line; the
session sends it straight to the connection, outside the outbox, contexts and logs, since it
holds the password."""

from __future__ import annotations

from relaybot.config.schema import NickservConfig


def identify_line(nickserv: NickservConfig | None, logged_in: bool) -> str | None:
    """`PRIVMSG <service> :IDENTIFY <account> <password>`, or None: none configured, or SASL
    already logged the bot in (a second login would be noise, and a password sent for
    nothing)."""
    if nickserv is None or logged_in:
        return None
    return f"PRIVMSG {nickserv.service} :IDENTIFY {nickserv.account} {nickserv.password.value}"
