"""``python -m pi_agent`` is the ``pi-agent`` command."""

from .cli import main

raise SystemExit(main())
