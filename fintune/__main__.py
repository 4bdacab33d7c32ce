"""python -m fintune: the `fintune` command."""
from fintune.cli import main

raise SystemExit(main())
