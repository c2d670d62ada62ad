"""contacts-report: raw contact events -> warehouse -> static report pages (see README.md)."""

import os

# numpy's bundled OpenBLAS starts worker threads at import that spin for a while: ~0.1 CPU-s per process
# (~2 % of a 1 M-event ETL). Nothing here does linear algebra. An explicit setting is respected.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
