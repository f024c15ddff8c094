"""``python -m gatelab``: the same as the ``gatelab`` command."""

from gatelab.cli import main

raise SystemExit(main())
