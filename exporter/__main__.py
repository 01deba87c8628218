"""`python -m exporter` runs the same program as the `notte-exporter` script."""

from exporter.cli import main

raise SystemExit(main())
