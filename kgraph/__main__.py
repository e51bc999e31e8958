"""`python -m kgraph`: the `kgraph` command (see `kgraph.cli`).

Example:
    $ python -m kgraph inspect model.keras
"""

from kgraph.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
