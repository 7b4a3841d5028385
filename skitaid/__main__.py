"""`python -m skitaid …` is the `skitaid` command."""
import sys

from .cli import main

sys.exit(main())
