"""``autotransfer``: one subcommand per pipeline stage, plus the demo data.

Exit codes: 0 success, 1 the stage ran and found a problem (e.g. invalid data),
2 bad usage or configuration (the message names the key or file).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from autotransfer.config import DEFAULT_PARAMS_FILE, ConfigError, Params, load_params

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def _common() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--params", type=Path, default=DEFAULT_PARAMS_FILE,
                        help="params file (default: params.yaml; missing means all defaults)")
    common.add_argument("-S", "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a parameter, e.g. -S data.target=digits-m (repeatable)")
    common.add_argument("--no-progress", action="store_true", help="no progress bars")
    return common


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="autotransfer", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    common = _common()

    demo = sub.add_parser("demo-data", parents=[common], help="build the demo domains (synth-digits, digits, digits-m)")
    demo.add_argument("--out", type=Path, help="output folder (default: demo.out, i.e. data/)")
    demo.add_argument("--no-dvc", action="store_true", help="do not record the data in data.dvc / the DVC cache")
    demo.set_defaults(handler=cmd_demo_data)

    validate = sub.add_parser("validate", parents=[common], help="scan and validate the source and target domains")
    validate.add_argument("--data", type=str, help="data root holding the domains (overrides data.root)")
    validate.add_argument("--reports", type=Path, help="report folder (overrides reports.dir)")
    validate.set_defaults(handler=cmd_validate)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.handler(args)
    except ConfigError as exc:
        print(f"autotransfer: configuration error: {exc}", file=sys.stderr)
        return EXIT_USAGE


def _params(args: argparse.Namespace, *extra: str) -> Params:
    return load_params(args.params, [*args.overrides, *extra])


def _progress(args: argparse.Namespace) -> bool | None:
    return False if args.no_progress else None


def cmd_demo_data(args: argparse.Namespace) -> int:
    from autotransfer.demo_data import build_demo_data
    from autotransfer.dvc_data import commit_data

    params = _params(args)
    out = Path(args.out or params.demo.out)
    started = time.perf_counter()
    counts = build_demo_data(params.demo, out=out, progress=_progress(args))
    for domain, splits in counts.items():
        print(f"{(out / domain).as_posix()}: " + ", ".join(f"{split} {n}" for split, n in splits.items()))
    print(f"built in {time.perf_counter() - started:.1f} s")
    if not args.no_dvc:
        try:
            print(commit_data(out))
        except RuntimeError as exc:
            print(f"autotransfer: {exc}", file=sys.stderr)
            return EXIT_FAILED
    return EXIT_OK


def cmd_validate(args: argparse.Namespace) -> int:
    from autotransfer.validation import summary_lines, validate

    params = _params(args, *([f"data.root={json.dumps(args.data)}"] if args.data else []))
    started = time.perf_counter()
    result = validate(params, reports_dir=args.reports, progress=_progress(args))
    for line in summary_lines(result.report, params.validation.max_listed):
        print(line)
    print(f"report: {result.json_path.as_posix()} and {result.markdown_path.as_posix()} "
          f"({time.perf_counter() - started:.1f} s)")
    return EXIT_OK if result.success else EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
