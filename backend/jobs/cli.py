"""`jobs`, `stop`, `resume` and `logs` commands."""

from __future__ import annotations

import json
import sys
import time

from backend.jobs.events import LOG_FILE, last_event, read_log_tail
from backend.jobs.registry import FINISHED, JobRecord


def add_parsers(sub) -> None:
    parents = [sub.common] if getattr(sub, "common", None) is not None else []
    p = sub.add_parser("jobs", parents=parents, help="list the jobs of the workspace")
    p.add_argument("--json", action="store_true", help="print the list as JSON")
    p.set_defaults(func=cmd_jobs)
    p = sub.add_parser("stop", parents=parents, help="ask a running job to stop (it saves its state)")
    p.add_argument("job_id", metavar="ID")
    p.add_argument("--grace", type=float, default=None, metavar="SECONDS",
                   help="seconds before the worker is signalled (default 30)")
    p.set_defaults(func=cmd_stop)
    p = sub.add_parser("resume", parents=parents, help="resume a stopped or interrupted training job")
    p.add_argument("job_id", metavar="ID")
    p.set_defaults(func=cmd_resume)
    p = sub.add_parser("repair", parents=parents,
                       help="rebuild a damaged job's job.json from its events.jsonl and config.toml")
    p.add_argument("job_id", metavar="ID")
    p.set_defaults(func=cmd_repair)
    p = sub.add_parser("logs", parents=parents, help="print a job's log")
    p.add_argument("job_id", metavar="ID")
    p.add_argument("--follow", "-f", action="store_true", help="keep printing until the job ends")
    p.set_defaults(func=cmd_logs)


def _supervisor(args, autostart: bool):
    from backend.jobs.supervisor import Supervisor
    from backend.paths import open_workspace

    return Supervisor(open_workspace(getattr(args, "workspace", None)), autostart=autostart,
                      min_poll_interval_s=0.0)


def job_row(sup, rec: JobRecord) -> dict:
    """What `jobs` shows of one job: id, kind, status, step (of the last progress event), folder."""
    d = sup.paths.jobs / rec.id
    progress = last_event(d, "progress") or {}
    row = {"id": rec.id, "kind": rec.kind, "name": rec.name, "status": rec.status,
           "step": progress.get("step"), "total": progress.get("total"), "folder": str(d),
           "created_at": rec.created_at, "error": (rec.error or "").split("\n", 1)[0] or None}
    if rec.damaged:
        row["problems"] = list(rec.extra.get("problems", []))
    return row


def cmd_jobs(args) -> int:
    sup = _supervisor(args, autostart=False)  # listing reconciles but starts nothing
    rows = [job_row(sup, r) for r in sup.poll(force=True)]
    if args.json:
        print(json.dumps(rows, indent=1))
        return 0
    if not rows:
        print(f"no jobs in {sup.paths.jobs}")
        return 0
    print(f"{'ID':40} {'KIND':9} {'STATUS':11} {'STEP':>11}  FOLDER")
    for r in rows:
        step = "" if r["step"] is None else f"{r['step']}/{r['total'] if r['total'] is not None else '?'}"
        print(f"{r['id']:40} {r['kind']:9} {r['status']:11} {step:>11}  {r['folder']}")
        if "problems" in r:
            print(f"    job.json: {'; '.join(r['problems'])}\n"
                  f"    repair it: python -m backend repair {r['id']}   (or delete the folder)")
    return 0


def cmd_stop(args) -> int:
    rec = _supervisor(args, autostart=False).stop(args.job_id, args.grace)
    print(f"{rec.id}: {rec.status}")
    return 0


def cmd_resume(args) -> int:
    rec = _supervisor(args, autostart=True).resume(args.job_id)
    print(f"{rec.id}: {rec.status}{' (resuming)' if rec.resume else ''}")
    return 0


def cmd_repair(args) -> int:
    rec = _supervisor(args, autostart=False).repair(args.job_id)
    print(f"{rec.id}: job.json rebuilt; {rec.kind} job, {rec.status}")
    return 0


def cmd_logs(args) -> int:
    sup = _supervisor(args, autostart=False)
    d = sup.job_dir(args.job_id)
    text, offset = read_log_tail(d / LOG_FILE, 0)
    sys.stdout.write(text)
    while args.follow:
        sys.stdout.flush()
        sup.poll(force=True)
        done = sup.get(args.job_id).status in FINISHED
        text, offset = read_log_tail(d / LOG_FILE, offset)
        sys.stdout.write(text)
        if done and not text:
            break
        time.sleep(0.5)
    sys.stdout.flush()
    return 0
