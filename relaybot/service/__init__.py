"""The running bot: assembly, signals, reload, state persistence and systemd."""
