"""Data-triggered retraining: the ``autotransfer.data.changed`` event, and the watcher that emits it.

    python -m flows.events --once     # emit the event if data.dvc's md5 changed since the last one
    python -m flows.events            # the same every --interval seconds, until Ctrl-C

The nightly deployment (``flows/deploy.py``, ``prefect.yaml``) has a trigger on this event:
each emitted event starts one retrain run, and the deployment's concurrency limit of 1
queues a run that arrives while another is running. What changes ``data.dvc`` is what a
team does with new images: ``autotransfer demo-data``, ``dvc add data``, a ``git pull`` /
``dvc pull`` of a teammate's data; a git ``post-merge`` hook that runs ``--once`` makes the
pull itself the trigger. The watcher remembers the last md5 it announced (``--state``), so
an unchanged ``data.dvc`` emits nothing, and the first look only records it.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import yaml

DATA_CHANGED = "autotransfer.data.changed"
RESOURCE_PREFIX = "autotransfer.data."
PROJECT = Path(__file__).resolve().parents[1]


def data_md5(pointer: Path) -> str | None:
    """The md5 DVC recorded for the data (``data.dvc``'s output), None without one."""
    try:
        return str(yaml.safe_load(pointer.read_text())["outs"][0]["md5"])
    except (OSError, KeyError, IndexError, TypeError, yaml.YAMLError):
        return None


def check(pointer: Path, state: Path, first_emits: bool = False) -> str | None:
    """Emit ``autotransfer.data.changed`` if ``pointer``'s md5 is not the last one announced; what was done."""
    from prefect.events import emit_event
    from prefect.settings import PREFECT_API_URL

    md5 = data_md5(pointer)
    if md5 is None:
        return None
    try:
        last = json.loads(state.read_text()).get("md5")
    except (OSError, ValueError):
        last = None
    if md5 == last:
        return None
    sent = f"{pointer}: md5 {md5} recorded; the next change emits {DATA_CHANGED}"
    if last is not None or first_emits:
        if not PREFECT_API_URL.value():  # Prefect would send it to a throwaway server of this process
            raise RuntimeError("no Prefect API to send the event to: set PREFECT_API_URL (or run `make serve`)")
        event = emit_event(
            DATA_CHANGED,
            resource={"prefect.resource.id": f"{RESOURCE_PREFIX}{pointer.stem}", "autotransfer.md5": md5},
            payload={"md5": md5, "previous": last, "pointer": str(pointer)},
        )
        sent = f"{DATA_CHANGED}: {pointer} {last or 'none'} -> {md5}" + (f" (event {event.id})" if event else "")
    state.parent.mkdir(parents=True, exist_ok=True)
    state.write_text(json.dumps({"md5": md5, "pointer": str(pointer), "at": time.time()}))
    return sent


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m flows.events", description=__doc__.splitlines()[0])
    parser.add_argument("--data-dvc", type=Path, default=PROJECT / "data.dvc", help="the DVC pointer to watch")
    parser.add_argument(
        "--state",
        type=Path,
        default=PROJECT / ".autotransfer/data-event.json",
        help="where the last announced md5 is kept (git-ignored)",
    )
    parser.add_argument("--once", action="store_true", help="check once and exit (a git hook, cron)")
    parser.add_argument("--interval", type=float, default=60, help="seconds between two checks (default 60)")
    parser.add_argument(
        "--first-emits",
        action="store_true",
        help="emit on the first check too (default: the first check only records the md5)",
    )
    args = parser.parse_args(argv)
    first = args.first_emits
    try:
        while True:
            sent = check(args.data_dvc, args.state, first)
            first = False
            print(sent or f"{args.data_dvc}: unchanged ({data_md5(args.data_dvc)})", flush=True)
            if args.once:
                return 0
            time.sleep(args.interval)
    except KeyboardInterrupt:
        return 0
    except RuntimeError as exc:
        print(f"python -m flows.events: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
