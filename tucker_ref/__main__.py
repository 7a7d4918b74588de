"""``python -m tucker_ref …`` = ``tucker-ref …``."""

from .cli import main

raise SystemExit(main())
