"""``python -m gatelab``: the same as the ``gatelab`` command."""

from gatelab.cli.main import main

raise SystemExit(main())
