from acp.daemon.cli import main

raise SystemExit(main())
