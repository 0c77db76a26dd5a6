"""IRCv3 capability negotiation (CAP LS 302, REQ, ACK, NAK, NEW, DEL, END) and when SASL runs
and how it ended, as lines in, lines out: fed the server's CAP, AUTHENTICATE and 900-908
messages, it returns the lines to send and keeps what was agreed. The mechanisms themselves are
relaybot.irc.sasl's. No sockets, no irc library objects."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial
from typing import Any, Literal

from relaybot.irc.numerics import (
    ERR_NICKLOCKED,
    ERR_SASLABORTED,
    ERR_SASLALREADY,
    ERR_SASLFAIL,
    ERR_SASLTOOLONG,
    RPL_LOGGEDIN,
    RPL_LOGGEDOUT,
    RPL_SASLMECHS,
    RPL_SASLSUCCESS,
)
from relaybot.irc.sasl import Exchange, SaslLogin
from relaybot.irc.sts import StsValue
from relaybot.irc.sts import parse as parse_sts
from relaybot.log import get_logger

_log = get_logger(component="session")

# Requested in this order whenever the server offers them (sasl only with a login to use).
WANTED_CAPS = (
    "sasl",
    "server-time",
    "message-tags",
    "account-tag",
    "extended-join",
    "account-notify",
    "multi-prefix",
    "away-notify",
    "chghost",
    "cap-notify",
    "invite-notify",
    "userhost-in-names",
    "echo-message",
    "batch",  # only with draft/multiline, which needs it (see _to_request)
    "draft/multiline",
)
SaslOutcome = Literal["success", "failed", "already", "unavailable"]


class Capabilities:
    """One connection's negotiation. Feed it every line whose command is in `commands` and send
    what `feed` returns. `ended` turns True once CAP END is sent (or the server registered us
    without it): from then on registration may go on, and SASL is no longer asked for.

    With `sasl_required`, SASL that does not log us in never ends in CAP END: `give_up` then
    says why, and the session drops the connection instead of registering unauthenticated.

    STS: on a plaintext link (`secure` False) an `sts` value with a port stops negotiation
    (`sts_upgrade`: the session reconnects with TLS there); on a TLS link one with a duration
    is left in `sts_policy` for the session to persist."""

    def __init__(
        self,
        sasl: SaslLogin | None,
        *,
        wanted: Sequence[str] = WANTED_CAPS,
        log: Any = None,
        sasl_required: bool = False,
        exchange: Callable[[SaslLogin], Exchange] = Exchange,
    ) -> None:
        self.sasl = sasl
        self.sasl_required = sasl_required and sasl is not None
        self._new_exchange = exchange  # tests give one with a fixed SCRAM nonce
        self._exchange: Exchange | None = None
        self.wanted = tuple(wanted)
        self.log = log if log is not None else _log
        self.offered: dict[str, str] = {}  # name -> value (`sasl=PLAIN,EXTERNAL`), or ""
        self.enabled: set[str] = set()
        self.ended = False
        self.sasl_outcome: SaslOutcome | None = None
        self.account: str | None = None  # what 900 said we are logged in as
        self.mechanisms: tuple[str, ...] = ()  # what 908 said the server would take
        self.give_up: str | None = None  # required SASL failed: why this connection must go
        self.secure = False  # whether this connection is TLS (the session says, per connection)
        self.sts_upgrade: int | None = None  # plaintext told to move: the TLS port to use
        self.sts_policy: StsValue | None = None  # a persistence policy the session has to keep
        self._handlers: dict[str, Callable[[Sequence[str]], list[str]]] = {
            "CAP": self._cap,
            "AUTHENTICATE": self._authenticate,
            RPL_LOGGEDIN: self._logged_in,
            RPL_LOGGEDOUT: self._logged_out,
            ERR_NICKLOCKED: partial(self._sasl_failed, ERR_NICKLOCKED),
            RPL_SASLSUCCESS: self._sasl_success,
            ERR_SASLFAIL: partial(self._sasl_failed, ERR_SASLFAIL),
            ERR_SASLTOOLONG: partial(self._sasl_failed, ERR_SASLTOOLONG),
            ERR_SASLABORTED: partial(self._sasl_failed, ERR_SASLABORTED),
            ERR_SASLALREADY: self._sasl_already,
            RPL_SASLMECHS: self._sasl_mechanisms,
        }

    @property
    def commands(self) -> frozenset[str]:
        """The commands and numerics `feed` answers."""
        return frozenset(self._handlers)

    def reset(self, *, secure: bool = False) -> None:
        """A new connection: nothing offered, nothing enabled, negotiation open again."""
        self.secure = secure
        self.sts_upgrade = None
        self.sts_policy = None
        self.offered.clear()
        self.enabled.clear()
        self.ended = False
        self.sasl_outcome = None
        self.account = None
        self.mechanisms = ()
        self._exchange = None
        self.give_up = None

    @property
    def logged_in(self) -> bool:
        """SASL logged this connection in: 903, 907 (already), or a 900 naming the account."""
        return self.sasl_outcome in ("success", "already") or self.account is not None

    def registered(self) -> None:
        """001 came: negotiation is over, whether or not the server ever spoke CAP. A server
        that registers us without SASL having logged us in fails a requirement too."""
        if not self.logged_in:
            self._sasl_lost("the server registered the connection without SASL")
        self.ended = True

    def feed(self, command: str, params: Sequence[str]) -> list[str]:
        """The lines to send in answer to one server message (command uppercased, numerics as
        three digits; params as parsed, the first being the target)."""
        handler = self._handlers.get(command)
        if handler is None or self.give_up is not None or self.sts_upgrade is not None:
            return []  # given up, or moving to TLS: the session is dropping this connection
        return handler(params)

    def _sasl_lost(self, problem: str) -> bool:
        """SASL will not log this connection in. True where that must end the connection
        (SASL required, negotiation still open): `give_up` is set, and no CAP END goes."""
        if not self.sasl_required or self.ended:
            return False
        if self.give_up is None:
            self.give_up = problem
            self.log.error(
                "sasl_required_failed",
                problem=problem,
                action="disconnecting: irc.sasl.required forbids going on unauthenticated",
            )
        return True

    # CAP

    def _cap(self, params: Sequence[str]) -> list[str]:
        args = list(params[1:])  # after the target: "*" before registration, else our nick
        if not args:
            return []
        sub = args[0].upper()
        if sub == "LS":
            more = len(args) > 2 and args[1] == "*"  # 302: a `*` line has more to come
            if self._sts(self._offer(args[-1])):
                return []  # nothing more on a plaintext link the server wants upgraded
            if more:
                return []
            wanted = self._to_request(self.offered)
            if self.give_up is not None:
                return []
            return [f"CAP REQ :{' '.join(wanted)}"] if wanted else self._end()
        if sub == "ACK":
            for cap in args[-1].split():
                if cap.startswith("-"):
                    self.enabled.discard(cap[1:])
                else:
                    self.enabled.add(cap)
            self.log.info("caps_enabled", caps=sorted(self.enabled))
            if self.ended:
                return []  # a later REQ (after CAP NEW)
            if "sasl" in self.enabled and self.sasl is not None:
                self._exchange = self._new_exchange(self.sasl)
                return [self._exchange.first_line()]
            if self._sasl_lost("the server did not enable sasl"):
                return []
            return self._end()
        if sub == "NAK":
            self.log.warning("caps_refused", caps=args[-1])
            if self._sasl_lost("the server refused the capabilities asked for, sasl with them"):
                return []
            return self._end()
        if sub == "NEW":
            new = self._offer(args[-1])
            if self._sts(new):
                return []
            wanted = [cap for cap in self._to_request(new) if cap != "sasl"]
            return [f"CAP REQ :{' '.join(wanted)}"] if wanted else []
        if sub == "DEL":
            gone = args[-1].split()
            for cap in gone:
                self.offered.pop(cap, None)
                self.enabled.discard(cap)
            self.log.info("caps_removed", caps=gone)
        return []

    def _sts(self, offered: dict[str, str]) -> bool:
        """Heed an `sts` value as the spec says for this kind of link; True when this
        plaintext connection must be left for TLS. Never requested: it is a policy, not a
        capability to enable."""
        if "sts" not in offered:
            return False
        value = parse_sts(offered["sts"])
        if not self.secure:
            if value.port is None:
                return False  # no upgrade policy: a duration on plaintext means nothing
            self.sts_upgrade = value.port
            self.log.info("sts_upgrade", port=value.port)
            return True
        if value.duration is not None:
            self.sts_policy = value
        return False

    def _offer(self, text: str) -> dict[str, str]:
        offered = {}
        for item in text.split():
            name, _, value = item.partition("=")
            offered[name] = value
        self.offered.update(offered)
        return offered

    def _to_request(self, offered: dict[str, str]) -> list[str]:
        wanted = [cap for cap in self.wanted if cap in offered and cap != "sasl"]
        if "draft/multiline" not in wanted and "draft/multiline" not in self.enabled:
            # Server batches (netsplits, history) are of no use to the bot without it.
            wanted = [cap for cap in wanted if cap != "batch"]
        sasl = self.sasl
        if sasl is not None and not self.ended:
            mechanisms = offered.get("sasl")
            if mechanisms is None:
                if "sasl" not in self.offered:
                    self._unavailable("the server offers no SASL")
            else:
                if mechanisms and sasl.mechanism not in mechanisms.upper().split(","):
                    # Tried all the same (as Limnoria and Sopel do): the list may be incomplete
                    # or stale, and a refusal costs one 904, after which CAP ends as usual.
                    self.log.warning(
                        "sasl_mechanism_not_listed",
                        mechanism=sasl.mechanism,
                        offered=mechanisms,
                        problem="trying it anyway",
                    )
                # A bare `sasl` (CAP 301, or a 302 server without a list): try ours anyway.
                wanted.insert(0, "sasl")
        return wanted

    def _unavailable(self, problem: str) -> None:
        self.sasl_outcome = "unavailable"
        going_on = "" if self.sasl_required else "; continuing unauthenticated"
        self.log.error("sasl_unavailable", problem=problem + going_on)
        self._sasl_lost(problem)

    def _end(self) -> list[str]:
        if self.ended:
            return []
        self.ended = True
        return ["CAP END"]

    # SASL

    def _authenticate(self, params: Sequence[str]) -> list[str]:
        exchange = self._exchange
        if not params or exchange is None or self.ended:
            return []
        lines = exchange.feed(params[0])
        if exchange.aborted is not None and lines:
            # The server answers the `*` with 906, which ends negotiation as any failure does;
            # where SASL is required the connection goes at once, after the `*`.
            self.sasl_outcome = "failed"
            self.log.error("sasl_failed", mechanism=exchange.mechanism, problem=exchange.aborted)
            self._sasl_lost(f"{exchange.mechanism} aborted: {exchange.aborted}")
        return lines

    def _sasl_success(self, params: Sequence[str]) -> list[str]:
        if self.sasl_outcome == "failed" and self.ended:
            # A 903 after the exchange failed and CAP ended (904...) is no login: keep that.
            self.log.warning("sasl_success_after_failure_ignored")
            return []
        exchange = self._exchange
        if exchange is not None and exchange.problem() is not None:
            # We gave up on this server, or it skipped proving itself (SCRAM): its word that
            # we are logged in is not taken.
            self.log.error("sasl_not_trusted", problem=exchange.problem())
            return self._sasl_failed(RPL_SASLSUCCESS, params)
        self.sasl_outcome = "success"
        self.log.info("sasl_success")
        return self._end()

    def _sasl_failed(self, numeric: str, params: Sequence[str]) -> list[str]:
        # 902 (nick locked), 904, 905, 906. Going on unauthenticated beats never registering,
        # unless the config says otherwise.
        self.sasl_outcome = "failed"
        message = " ".join(params[1:])
        self.log.error("sasl_failed", numeric=numeric, message=message)
        if self._sasl_lost(f"{numeric} {message}".strip()):
            return []
        return self._end()

    def _sasl_already(self, params: Sequence[str]) -> list[str]:
        self.sasl_outcome = "already"
        self.log.info("sasl_already_authenticated")
        return self._end()

    def _sasl_mechanisms(self, params: Sequence[str]) -> list[str]:
        # 908 comes before 904: the mechanisms this server would have taken.
        mechanisms = params[1] if len(params) > 1 else ""
        self.mechanisms = tuple(item for item in mechanisms.split(",") if item)
        self.log.error("sasl_mechanisms_offered", mechanisms=mechanisms)
        return []

    def _logged_in(self, params: Sequence[str]) -> list[str]:
        # 900: nick nick!user@host account :You are now logged in as account
        self.account = params[2] if len(params) > 2 else None
        self.log.info("logged_in", account=self.account)
        return []

    def _logged_out(self, params: Sequence[str]) -> list[str]:
        self.account = None
        self.log.warning("logged_out")
        return []
