"""Entry points: `relaybot` (the service), the demo and the terminal chat."""
