"""Names for the server numerics the bot handles, so that `grep 433` finds what it does with
one. The values are the wire strings (RFC 1459/2812, IRCv3 SASL, modern.ircdocs.horse)."""

from __future__ import annotations

# Registration and server features
RPL_WELCOME = "001"
RPL_ISUPPORT = "005"

# Channels and users
RPL_TOPIC = "332"
RPL_WHOISBOT = "335"  # WHOIS line for a user in the server's bot mode
RPL_WHOREPLY = "352"
RPL_NAMREPLY = "353"
RPL_WHOSPCRPL = "354"  # WHOX

# Nick refused during registration
ERR_ERRONEUSNICKNAME = "432"
ERR_NICKNAMEINUSE = "433"
ERR_UNAVAILRESOURCE = "437"  # nick held by services or delayed after a split

# JOIN refused
ERR_CHANNELISFULL = "471"
ERR_INVITEONLYCHAN = "473"
ERR_BANNEDFROMCHAN = "474"
ERR_BADCHANNELKEY = "475"

# SASL (https://ircv3.net/specs/extensions/sasl-3.1)
RPL_LOGGEDIN = "900"
RPL_LOGGEDOUT = "901"
ERR_NICKLOCKED = "902"
RPL_SASLSUCCESS = "903"
ERR_SASLFAIL = "904"
ERR_SASLTOOLONG = "905"
ERR_SASLABORTED = "906"
ERR_SASLALREADY = "907"
RPL_SASLMECHS = "908"
