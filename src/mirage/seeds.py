"""``mirage-seeds``: the demo over several seeds as one table (mean ± sd [min, max] per cell).

mirage-seeds logs/mirage_demo/multiruns/<ts>      # what `make demo SEEDS="1 2 3"` also writes itself
"""

from __future__ import annotations

from mirage.workflows.seed_table import main

__all__ = ["main"]

if __name__ == "__main__":
    main()
