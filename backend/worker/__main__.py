"""`python -m backend.worker JOB_DIR`: run one job (see backend/worker/entry.py)."""

from backend.worker.entry import main

if __name__ == "__main__":
    raise SystemExit(main())
