"""The worker process: `python -m backend.worker JOB_DIR` runs one job of any kind."""
