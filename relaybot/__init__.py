"""relaybot: an IRC bot that speaks through a local language model."""

__version__ = "0.1.0"
