"""What a session does about each server line it acts on: the dispatch table by command or
numeric, and one handler each (registration, PING, who is who, the bot's own channels), which
hands the events relaybot.irc.translate makes on to the session's `on_event`. The bot's own
PRIVMSG/NOTICE lines echoed back (echo-message) also go to the writer, which records them; a
CTCP query sent to the bot in private is answered as relaybot.irc.ctcp decides.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import irc.client

from relaybot.irc import numerics as num
from relaybot.irc import translate
from relaybot.irc.channels import JOIN_REFUSED, Channel, invite_allowed, join_line
from relaybot.irc.events import IrcEvent, Origin
from relaybot.irc.message import IrcMessage
from relaybot.irc.nickserv import identify_line
from relaybot.irc.text import is_channel_name, safe_line
from relaybot.irc.tracking import whox_fields

if TYPE_CHECKING:
    from relaybot.irc.session import IrcSession

Handler = Callable[[IrcMessage], None]

# The QUIT message when irc.sasl.required drops a connection SASL did not log in.
SASL_REQUIRED_QUIT = "SASL login required"


class ServerLines:
    """The handlers of one session. They read and change the session's state (registered,
    channels, nick, who is who), so they live beside it rather than owning any of their own."""

    def __init__(self, session: IrcSession) -> None:
        self.session = session
        self.handlers = self._handler_table()

    def dispatch(self, message: IrcMessage) -> None:
        handler = self.handlers.get(message.command)
        if handler is not None:
            handler(message)

    def _handler_table(self) -> dict[str, Handler]:
        """Every server line the bot acts on, by its command or numeric (relaybot.irc.numerics).
        Looked up by the command as sent: never by the irc library's names for numerics, which
        a server could send as commands."""
        return {
            "PING": self.on_ping,
            "PONG": self.on_pong,
            "ERROR": self.on_error,
            num.RPL_WELCOME: self.on_welcome,
            num.RPL_ISUPPORT: self.on_isupport,
            num.ERR_ERRONEUSNICKNAME: self.on_nick_refused,
            num.ERR_NICKNAMEINUSE: self.on_nick_refused,
            num.ERR_UNAVAILRESOURCE: self.on_nick_refused,
            # CAP and SASL: every line relaybot.irc.capabilities answers, and only those
            **dict.fromkeys(self.session.caps.commands, self.negotiate),
            # who is who: relaybot.irc.tracking keeps it
            "ACCOUNT": self.on_account,
            num.RPL_WHOREPLY: self.on_who_reply,
            num.RPL_WHOSPCRPL: self.on_whox_reply,
            num.RPL_WHOISBOT: self.on_whois_bot,
            # channel events
            "PRIVMSG": self.on_privmsg,
            "NOTICE": self.on_notice,
            "JOIN": self.on_join,
            "PART": self.on_part,
            "QUIT": self.on_quit,
            "NICK": self.on_nick,
            "TOPIC": self.on_topic,
            num.RPL_TOPIC: self.on_current_topic,
            num.RPL_NAMREPLY: self.on_names,
            "KICK": self.on_kick,
            "MODE": self.on_mode,
            "INVITE": self.on_invite,
            # 471/473/474/475: the channel is forgotten, with the reason
            **dict.fromkeys(JOIN_REFUSED, self.on_join_refused),
        }

    def _origin(self, message: IrcMessage) -> Origin:
        return translate.origin_of(message, self.session.users)

    def _is_me(self, nick: str) -> bool:
        return self.session._fold(nick) == self.session._fold(self.session.nick)

    def _hand_on(self, event: IrcEvent | None) -> None:
        if event is not None:
            self.session.on_event(event)

    # connection

    def on_ping(self, message: IrcMessage) -> None:
        if not message.params:
            return  # nothing to echo: no PONG, as before the split
        token = safe_line(message.params[0])[:400] or "relaybot"
        if self.session.connection.is_connected():
            self.session.connection.send_raw(f"PONG :{token}")

    def on_pong(self, message: IrcMessage) -> None:
        # `:srv PONG srv :token` or `PONG :token`: the token is the last parameter.
        self.session.delivery.confirm(message.params[-1] if message.params else "")

    def on_error(self, message: IrcMessage) -> None:
        log = self.session.log
        # The server answers our own QUIT with ERROR: expected while stopping, not a fault.
        level = log.info if self.session._stop.is_set() else log.warning
        level("server_error", message=message.params[0] if message.params else None)

    # registration

    def negotiate(self, message: IrcMessage) -> None:
        caps = self.session.caps
        for line in caps.feed(message.command, message.params):
            self.session._send_raw(line)  # AUTHENTICATE payloads are base64: never logged
        if caps.give_up is not None:
            self.session.give_up_connection(SASL_REQUIRED_QUIT)
        elif message.command == "CAP":
            self.session.sts_negotiated()

    def on_nick_refused(self, message: IrcMessage) -> None:
        session = self.session
        if session.registered:
            return
        tried = message.params[1] if len(message.params) > 1 else session.nick
        candidate = session.nicks.refused(tried)
        session.log.info("nick_taken", nick=tried, trying=candidate)
        session.connection.real_nickname = candidate
        session._send_raw(f"NICK {candidate}")

    def on_welcome(self, message: IrcMessage) -> None:
        session = self.session
        session.caps.registered()
        if session.caps.give_up is not None:
            # Registered without the SASL login the config requires: leave before joining.
            session.give_up_connection(SASL_REQUIRED_QUIT)
            return
        session.registered = True
        session.observer.registered(True)
        session.backoff.connected(session.clock())
        session.nicks.registered(session.clock())
        session.log.info("registered", nick=session.nick)
        self._identify()
        for channel in session.channels.values():
            session._send_raw(join_line(channel.name, channel.key))
        if session.on_registered is not None:
            session.on_registered()

    def _identify(self) -> None:
        """NickServ IDENTIFY where SASL did not log the bot in: before the JOINs, so that
        channels for identified users have a chance. Sent on the connection itself, never
        queued, recorded or logged: the line holds the password."""
        session = self.session
        nickserv = session.config.nickserv
        line = identify_line(nickserv, session.caps.logged_in)
        if nickserv is None or line is None:
            return
        # As is: a password is not text to clean (safe_line would strip formatting characters
        # and edge spaces out of it); the connection refuses a line with CR, LF or NUL.
        session.connection.send_raw(line)
        session.log.info(
            "nickserv_identify_sent", service=nickserv.service, account=nickserv.account
        )

    def on_isupport(self, message: IrcMessage) -> None:
        session = self.session
        session.users.isupport(message.params[1:])
        # ISUPPORT arrives after 001: this is the first moment we know the bot-mode letter.
        bot_mode = self._bot_flag()
        if (
            session.config.set_bot_mode
            and not session._bot_mode_set
            and bot_mode is not None
            and len(bot_mode) == 1
        ):
            session._bot_mode_set = True
            session._send_raw(f"MODE {session.nick} +{bot_mode}")

    def _bot_flag(self) -> str | None:
        """ISUPPORT BOT: the mode that marks bots, once the server has said it."""
        bot_flag = getattr(self.session.connection.features, "bot", None)
        return bot_flag if isinstance(bot_flag, str) and bot_flag else None

    # who is who

    def on_account(self, message: IrcMessage) -> None:
        origin = irc.client.NickMask(message.source or "")
        if origin.nick:
            self.session.users.account(origin.nick, message.params[0] if message.params else None)

    def on_who_reply(self, message: IrcMessage) -> None:
        # 352: me channel user host server nick flags :hops realname
        args = message.params[1:]
        if len(args) >= 6:
            self.session.users.who_reply(args[4], args[5], None, self._bot_flag())

    def on_whox_reply(self, message: IrcMessage) -> None:
        fields = whox_fields(message.params[1:])
        if fields is not None:
            nick, flags, account = fields
            self.session.users.who_reply(nick, flags, account, self._bot_flag())

    def on_whois_bot(self, message: IrcMessage) -> None:
        if len(message.params) > 1:
            self.session.users.whois_bot(message.params[1])

    # channel events: what the bot does about them, besides handing them on

    def on_privmsg(self, message: IrcMessage) -> None:
        origin = self._origin(message)
        self._own_echo(message, origin.nick)
        # Our own line goes on as an event too: the relay knows it and leaves it alone.
        for event in translate.privmsg_events(message, origin):
            self.session.on_event(event)
        self._answer_ctcp(message, origin)

    def _answer_ctcp(self, message: IrcMessage, origin: Origin) -> None:
        """A CTCP query sent to the bot in private gets its reply (relaybot.irc.ctcp decides
        which, and how often); one sent to a channel never does."""
        target, text = message.params[0], message.params[1]
        nick = origin.nick
        if not text.startswith("\x01") or not nick or self._is_me(nick) or is_channel_name(nick):
            return
        # Per person as user@host (Limnoria's *!user@host); the nick where the server gave none.
        who = f"{origin.user}@{origin.host}".lower() if origin.host else self.session._fold(nick)
        body = self.session.ctcp.reply(text, private=self._is_me(target), sender=who)
        if body is not None:
            self.session.writer.queue_ctcp_reply(nick, body)

    def on_notice(self, message: IrcMessage) -> None:
        # Only our own NOTICEs echoed back matter; other notices are no event.
        self._own_echo(message, irc.client.NickMask(message.source or "").nick or "")

    def _own_echo(self, message: IrcMessage, nick: str) -> None:
        """A PRIVMSG/NOTICE from ourselves is the server echoing a line of ours (echo-message):
        the writer then counts it as said."""
        if len(message.params) >= 2 and self._is_me(nick):
            self.session.writer.echoed(message.command, message.params[0], message.params[1])

    def on_join(self, message: IrcMessage) -> None:
        session = self.session
        join = translate.join_event(message, self._origin(message))
        if join is None:
            return
        nick, channel = join.origin.nick, join.channel
        if len(message.params) > 1:  # extended-join: remember the account for later lines
            session.users.account(nick, message.params[1])
        me = self._is_me(nick)
        if me:
            session._own_user = join.origin.user or None
            session._own_host = join.origin.host or None
            known = session.channels.setdefault(session._fold(channel), Channel(channel, None))
            known.joined = True
            session.log.info("joined", channel=channel)
            session._send_raw(session.users.who_query(channel))  # everyone's account, bot flag
        session.on_event(join)
        if me and session.on_joined is not None:
            session.on_joined(channel)

    def on_part(self, message: IrcMessage) -> None:
        part = translate.part_event(message, self._origin(message))
        if part is None:
            return
        if self._is_me(part.origin.nick):
            self.session.channels.pop(self.session._fold(part.channel), None)
        self.session.on_event(part)

    def on_quit(self, message: IrcMessage) -> None:
        quit_ = translate.quit_event(message, self._origin(message))
        self.session.on_event(quit_)
        self._nick_freed(quit_.origin.nick)
        self.session.users.quit(quit_.origin.nick)

    def on_nick(self, message: IrcMessage) -> None:
        change = translate.nick_event(message, self._origin(message))
        self.session.on_event(change)
        old = change.origin.nick
        if not self._is_me(old):
            self._nick_freed(old)
        # The new nick as sent, not as cleaned for the event: as before the split.
        self.session.users.renamed(old, message.params[0] if message.params else "")

    def _nick_freed(self, nick: str) -> None:
        session = self.session
        if session.nicks.freed(nick, session.nick):
            session.log.info("nick_regain", nick=session.nicks.wanted)
            session._send_raw(f"NICK {session.nicks.wanted}")

    def on_topic(self, message: IrcMessage) -> None:
        self._hand_on(translate.topic_event(message, self._origin(message)))

    def on_current_topic(self, message: IrcMessage) -> None:
        self._hand_on(translate.current_topic_event(message))

    def on_names(self, message: IrcMessage) -> None:
        self._hand_on(translate.names_event(message))

    def on_kick(self, message: IrcMessage) -> None:
        session = self.session
        kick = translate.kick_event(message, self._origin(message))
        if kick is None:
            return
        session.on_event(kick)
        if self._is_me(kick.target):
            channel = kick.channel
            session.log.warning("kicked", channel=channel, by=kick.origin.nick, reason=kick.reason)
            known = session.channels.get(session._fold(channel))
            if session.config.rejoin_on_kick and known is not None:
                known.joined = False
                session.loop.schedule(
                    session.config.rejoin_delay, lambda: session.join(known.name, known.key)
                )
            else:
                session._forget(channel, "kicked")

    def on_mode(self, message: IrcMessage) -> None:
        for event in translate.mode_events(message, self.session.connection.features):
            self.session.on_event(event)

    def on_join_refused(self, message: IrcMessage) -> None:
        # 471/473/474/475: me channel :reason
        if len(message.params) > 1 and message.params[1]:
            self.session._forget(message.params[1], JOIN_REFUSED[message.command])

    def on_invite(self, message: IrcMessage) -> None:
        session = self.session
        invite = translate.invite_event(message, self._origin(message), self._is_me)
        if invite is None:
            return  # invite-notify: someone else was invited
        origin, channel = invite.origin, invite.channel
        session.on_event(invite)
        if invite_allowed(origin.hostmask, origin.account, session.config, session._fold):
            session.log.info("invite_accepted", channel=channel, nick=origin.nick)
            session.join(channel)
        else:
            session.log.info(
                "invite_ignored",
                channel=channel,
                nick=origin.nick,
                hostmask=origin.hostmask,
                account=origin.account,
            )
