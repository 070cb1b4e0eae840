"""python -m jobq: see jobq.cli."""

from .cli import main

raise SystemExit(main())
