"""The validate stage: scan the source and target domains and check them with Great Expectations.

The expectation suite is code (``validate_checks.build_checks``): each check is a GX expectation over one
of three tables built from the scan, with an ``item`` column naming a file or a folder, so
that every failed expectation can list exactly which files or folders are at fault.

- ``files``:   one row per file (the manifest);
- ``folders``: one row per split folder and per (split, class) folder;
- ``content``: one row per distinct (content hash, domain, split): a hash that appears
  twice there is the same image in two splits or two domains (leakage).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from autotransfer.artifacts import MANIFEST_CSV, VALIDATION_JSON, VALIDATION_MD, ValidationReport
from autotransfer.config import Params, resolve_domain
from autotransfer.io.files import write_report, write_text
from autotransfer.io.manifest import SPLITS, UNLABELED, Domain, Scan, SplitShares, assign_usage, scan
from autotransfer.io.scan_state import ScanState
from autotransfer.stages.validate_checks import build_checks, run_checks

GRAY_MODES = ("1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "F")


@dataclass
class ValidationResult:
    success: bool
    report: ValidationReport
    json_path: Path
    markdown_path: Path
    manifest: pd.DataFrame = field(repr=False)
    reused: int = 0  # files unchanged since the last scan (validation.state_dir): not read again
    read: int = 0


def domains_from_params(params: Params) -> list[Domain]:
    root = Path(params.data.root)
    domains = []
    for role, name in (("source", params.data.source), ("target", params.data.target)):
        if name is None:  # source-free: the backbone's pretraining data is the source
            continue
        path = resolve_domain(params.data, name)
        inside_root = path.resolve().is_relative_to(root.resolve())
        shares = SplitShares(params.data.val_share, params.data.test_share)
        domains.append(Domain(name=name, role=role, path=path, root=root if inside_root else path, shares=shares))
    return domains


def validate(params: Params, reports_dir: Path | None = None, progress: bool | None = None) -> ValidationResult:
    """Scan, check, write ``validation.json``, ``validation.md`` and ``manifest.csv``."""
    reports_dir = Path(reports_dir or params.reports.dir)
    domains = domains_from_params(params)
    state = ScanState(params.validation.state_dir)
    try:
        scanned = scan(domains, max_pixels=params.validation.max_pixels, progress=progress, state=state)
    finally:
        state.close()
    tables = _tables(scanned)
    checks = build_checks(params, domains, scanned)
    results = run_checks(checks, tables)
    files = scanned.files.assign(
        usage=assign_usage(scanned.files, params.data.target, params.data.labeled_per_class, params.data.seed)
    )
    report = ValidationReport.model_validate(_report(params, domains, files, results, scanned.ignored))

    reports_dir.mkdir(parents=True, exist_ok=True)
    json_path = reports_dir / VALIDATION_JSON
    markdown_path = reports_dir / VALIDATION_MD
    write_report(json_path, report)
    write_text(markdown_path, render_markdown(report.to_json()))
    write_text(reports_dir / MANIFEST_CSV, files.to_csv(index=False, lineterminator="\n"))
    return ValidationResult(report.success, report, json_path, markdown_path, files, scanned.reused, scanned.read)


def run(params: Params, progress: bool | None = None) -> ValidationReport:
    """The validate stage as the pipeline runs it (``stages.pipeline``): its report, failed or not
    (``report.failed()`` says why the pipeline must stop)."""
    return validate(params, progress=progress).report


def _tables(scanned: Scan) -> dict[str, pd.DataFrame]:
    files = scanned.files.assign(item=scanned.files["path"])
    folders = scanned.folders.assign(item=scanned.folders["folder"])
    # Val is optional where splits come from content (a small class may draw no val image, and
    # training copes: train.min_val_per_class); test never is: a class without one cannot be scored.
    folders["eval_checked"] = folders["label"].notna() & (
        (folders["split"] == "test") | ((folders["split"] == "val") & (folders["split_by"] == "folder"))
    )
    readable = files[files["readable"]]
    placed = readable.assign(place=readable["domain"] + "/" + readable["split"])[["sha256", "place", "domain", "path"]]
    # A hash held by one file (nearly all of them) is its own row; only shared ones are grouped
    # (grouping every hash in Python took most of a rerun's time on 100k files).
    shared = placed["sha256"].duplicated(keep=False)
    single = placed[~shared]
    grouped = (
        placed[shared]
        .groupby(["sha256", "place", "domain"], sort=True)["path"]
        .agg(lambda paths: ", ".join(sorted(paths)))
        .reset_index()
    )
    # One row per (hash, place); the item names every file carrying that hash.
    everywhere = grouped.groupby("sha256")["path"].agg(lambda p: ", ".join(sorted(p)))
    places = grouped.groupby("sha256")["place"].agg(lambda p: " and ".join(sorted(p)))
    grouped = grouped.assign(item=grouped["sha256"].map(everywhere), places=grouped["sha256"].map(places))
    content = (
        pd.concat([single.assign(item=single["path"], places=single["place"]), grouped], ignore_index=True)
        .sort_values(["sha256", "place"], kind="stable")
        .reset_index(drop=True)
    )
    # The classes each shared image is labeled with in its domain (one, unless it is in two class folders).
    labeled = readable[readable["label"].notna() & readable.duplicated(["domain", "sha256"], keep=False)]
    labels = labeled.groupby(["domain", "sha256"])["label"].agg(lambda names: ", ".join(sorted(set(names))))
    keys = list(zip(content["domain"], content["sha256"]))
    counts = labeled.groupby(["domain", "sha256"])["label"].nunique()
    content["labels"] = [labels.get(key, "") for key in keys]
    content["n_labels"] = [int(counts.get(key, 1)) for key in keys]
    return {"files": files, "folders": folders, "content": content}


def _report(
    params: Params, domains: list[Domain], files: pd.DataFrame, results: list[dict], ignored: tuple[str, ...]
) -> dict[str, Any]:
    readable = files[files["readable"]]
    # A class folder's sub-folders are part of that class (a photo library's albums, say).
    labeled_files = files[files["label"].notna() & files["split"].isin(SPLITS)]
    in_subfolders = sum(Path(p).parent.parent.name != s for p, s in zip(labeled_files["path"], labeled_files["split"]))
    failed = [r["id"] for r in results if not r["success"] and r["severity"] == "error"]
    warned = [r["id"] for r in results if not r["success"] and r["severity"] == "warning"]
    duplicate_within = int(readable.duplicated(["domain", "split", "sha256"]).sum())
    target = params.data.target
    labeled = files[(files["domain"] == target) & files["usage"].isin(["train", "val"])]
    return {
        "success": not failed,
        "failed_checks": failed,
        "warnings": warned,
        "domains": {
            d.role: {
                "name": d.name,
                "path": d.path.as_posix(),
                "classes": sorted(files.loc[(files["domain"] == d.name) & files["label"].notna(), "label"].unique()),
                "images": {
                    split: int(((readable["domain"] == d.name) & (readable["split"] == split)).sum())
                    for split in (*SPLITS, UNLABELED)
                },
                "colour_images": int(((readable["domain"] == d.name) & ~readable["mode"].isin(GRAY_MODES)).sum()),
            }
            for d in domains
        },
        "files": {
            "total": len(files),
            "readable": len(readable),
            "unreadable": int((~files["readable"]).sum()),
            "modes": {k: int(v) for k, v in readable["mode"].value_counts().sort_index().items()},
            "converted_to_rgb": int((readable["mode"] != "RGB").sum()),
            "formats": {k: int(v) for k, v in readable["format"].value_counts().sort_index().items()},
            "duplicates_within_a_split": duplicate_within,
            "ignored": len(ignored),
            "in_class_subfolders": int(in_subfolders),
        },
        "target_usage": {
            "labeled_per_class_cap": params.data.labeled_per_class,
            "labeled_per_class": {str(k): int(v) for k, v in labeled.groupby("label").size().sort_index().items()},
            "labeled_val_per_class": {
                str(k): int(v)
                for k, v in labeled[labeled["usage"] == "val"].groupby("label").size().sort_index().items()
            },
            "unlabeled": int(((files["domain"] == target) & (files["usage"] == UNLABELED)).sum()),
            "test": int(((files["domain"] == target) & (files["usage"] == "test")).sum()),
        },
        "checks": results,
        "ignored": list(ignored),
    }


def render_markdown(report: dict[str, Any]) -> str:
    status = "PASSED" if report["success"] else "FAILED"
    lines = [f"# Data validation: {status}", ""]
    for role, info in report["domains"].items():
        counts = ", ".join(f"{k} {v}" for k, v in info["images"].items())
        lines.append(f"- **{role}** `{info['name']}` ({info['path']}): {len(info['classes'])} classes; {counts}")
    f = report["files"]
    lines += [
        f"- files: {f['total']} scanned, {f['readable']} readable, {f['unreadable']} unreadable; "
        f"{f['converted_to_rgb']} will be converted to RGB (modes: {f['modes']})",
        f"- identical images within a split: {f['duplicates_within_a_split']}",
        f"- images in sub-folders of a class folder (taken as that class): {f['in_class_subfolders']}",
        f"- ignored (hidden and system files and folders, never images): {f['ignored']}"
        + "".join(f"\n  - `{path}`" for path in report["ignored"]),
        "",
        "| check | severity | result | offending |",
        "|---|---|---|---|",
    ]
    for check in report["checks"]:
        result = "ok" if check["success"] else "**FAILED**"
        lines.append(f"| {check['description']} | {check['severity']} | {result} | {check['unexpected_count']} |")
    for check in report["checks"]:
        if check["offending"]:
            lines += ["", f"## {check['id']}: {check['description']}", ""]
            lines += [f"- `{o['item']}` {o['detail']}".rstrip() for o in check["offending"]]
    return "\n".join(lines) + "\n"


def summary_lines(typed: ValidationReport, max_listed: int) -> list[str]:
    """The console summary: what failed and which files, in a few lines."""
    report = typed.to_json()
    lines = [typed.summary()]
    if typed.ignored:
        shown = ", ".join(typed.ignored[:max_listed]) + (" ..." if len(typed.ignored) > max_listed else "")
        lines.append(f"  ignored {len(typed.ignored)} hidden or system files and folders (never images): {shown}")
    for check in report["checks"]:
        if check["success"]:
            continue
        label = "FAILED" if check["severity"] == "error" else "warning"
        lines.append(f"  {label}: {check['description']} ({check['unexpected_count']} offending)")
        for o in check["offending"][:max_listed]:
            lines.append(f"    {o['item']}: {o['detail']}".rstrip(": "))
        if check["unexpected_count"] > max_listed:
            lines.append(f"    ... and {check['unexpected_count'] - max_listed} more (see the report)")
    return lines
