"""IRC on the wire: parsing, numerics, text rules, events, the paced outbox, reconnect, TLS,
delivery confirmation, CAP/SASL, who is who, the nick, the channel list, the connection and
the session (the reactor thread). The only package that imports `irc`."""
