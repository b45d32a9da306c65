"""`python -m mini_bert` is the `minibert` command."""

import sys

from .cli import main

sys.exit(main())
