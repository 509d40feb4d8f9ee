from keeplb.cli import main

raise SystemExit(main())
