from devtools.fleet import main

raise SystemExit(main())
