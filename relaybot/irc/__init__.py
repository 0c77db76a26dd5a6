"""IRC on the wire: parsing, text rules, events, the paced outbox, reconnect, TLS, delivery
confirmation and the session (the reactor thread). The only package that imports `irc`."""
