"""``python -m omlmedia``: the same as the ``omlmedia`` command."""

from omlmedia.cli import main

raise SystemExit(main())
