"""`python -m relaybot` is the `relaybot` command."""

import sys

from relaybot.cli.main import main

sys.exit(main())
