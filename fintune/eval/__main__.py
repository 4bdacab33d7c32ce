from fintune.eval.cli import main

raise SystemExit(main())
