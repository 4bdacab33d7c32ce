"""python -m fintune: the `fintune` command."""
from fintune.commands import main

raise SystemExit(main())
