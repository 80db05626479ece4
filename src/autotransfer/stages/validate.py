"""The validate stage: scan the source and target domains and check them with Great Expectations.

The expectation suite is code (``build_checks``): each check is a GX expectation over one
of three tables built from the scan, with an ``item`` column naming a file or a folder, so
that every failed expectation can list exactly which files or folders are at fault.

- ``files``:   one row per file (the manifest);
- ``folders``: one row per split folder and per (split, class) folder;
- ``content``: one row per distinct (content hash, domain, split): a hash that appears
  twice there is the same image in two splits or two domains (leakage).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from autotransfer.artifacts import MANIFEST_CSV, VALIDATION_JSON, VALIDATION_MD, ValidationReport
from autotransfer.config import Params, ValidationConfig, resolve_domain
from autotransfer.io.files import write_report, write_text
from autotransfer.io.manifest import SPLITS, UNLABELED, Domain, Scan, SplitShares, assign_usage, scan
from autotransfer.io.scan_state import ScanState

GRAY_MODES = ("1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "F")


@dataclass(frozen=True)
class Check:
    id: str
    description: str
    table: str
    expectation: Any  # a great_expectations Expectation
    detail: Callable[[pd.Series], str] = lambda row: ""
    severity: str = "error"  # "warning": reported, does not fail validation
    # For aggregate expectations (no per-row result): what to name when they fail.
    fallback_items: tuple[str, ...] = ()


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


def build_checks(params: Params, domains: list[Domain], scanned: Scan) -> list[Check]:
    """Every check validate runs: on all files, per domain, then between the source and the target."""
    files = scanned.files
    train_classes = {
        d.name: sorted(
            files.loc[(files["domain"] == d.name) & (files["split"] == "train") & files["readable"], "label"]
            .dropna()
            .unique()
        )
        for d in domains
    }
    return [
        *_file_checks(params.validation),
        *_domain_checks(domains, train_classes),
        *_source_target_checks(params, domains, train_classes),
    ]


def _file_checks(v: ValidationConfig) -> list[Check]:
    """The checks on every file, folder and image content, whatever the domain."""
    import great_expectations as gx
    from great_expectations.expectations.row_conditions import Column

    e = gx.expectations
    return [
        Check(
            "files_readable",
            "every file is a readable image (decoded in full; links stay inside the data root)",
            "files",
            e.ExpectColumnValuesToBeInSet(column="readable", value_set=[True]),
            detail=lambda row: row["error"],
        ),
        Check(
            "image_width_in_range",
            f"image width between validation.min_side={v.min_side} and validation.max_side={v.max_side}",
            "files",
            e.ExpectColumnValuesToBeBetween(column="width", min_value=v.min_side, max_value=v.max_side),
            detail=lambda row: f"width {row['width']} px",
        ),
        Check(
            "image_height_in_range",
            f"image height between validation.min_side={v.min_side} and validation.max_side={v.max_side}",
            "files",
            e.ExpectColumnValuesToBeBetween(column="height", min_value=v.min_side, max_value=v.max_side),
            detail=lambda row: f"height {row['height']} px",
        ),
        Check(
            "split_folders_exist",
            f"each domain has the split folders {', '.join(SPLITS)}",
            "folders",
            e.ExpectColumnValuesToBeInSet(column="exists", value_set=[True], row_condition=Column("label").is_null()),
            detail=lambda row: "missing split folder",
        ),
        Check(
            "train_images_per_class",
            f"each class has at least validation.min_images_per_class={v.min_images_per_class} readable train images",
            "folders",
            e.ExpectColumnValuesToBeBetween(
                column="n_readable",
                min_value=v.min_images_per_class,
                row_condition=Column("label").is_not_null() & (Column("split") == "train"),
            ),
            detail=lambda row: _count_detail(row),
        ),
        Check(
            "eval_images_per_class",
            f"each class has at least validation.min_eval_images_per_class={v.min_eval_images_per_class} "
            "readable images in val and in test (in test only, where splits come from content)",
            "folders",
            e.ExpectColumnValuesToBeBetween(
                column="n_readable",
                min_value=v.min_eval_images_per_class,
                row_condition=Column("eval_checked") == True,  # noqa: E712
            ),
            detail=lambda row: _count_detail(row),
        ),
        Check(
            "no_shared_content",
            "no image content (sha256) is shared between splits or domains (leakage)",
            "content",
            e.ExpectColumnValuesToBeUnique(column="sha256"),
            detail=lambda row: f"same content in {row['places']}",
        ),
        Check(
            "one_label_per_image",
            "no image (sha256) is labeled with two classes",
            "content",
            e.ExpectColumnValuesToBeBetween(column="n_labels", max_value=1),
            detail=lambda row: f"the same image under classes {row['labels']}",
        ),
    ]


def _domain_checks(domains: list[Domain], train_classes: dict[str, list[str]]) -> list[Check]:
    """Each domain: at least two classes, and no val/test label without a train folder."""
    import great_expectations as gx
    from great_expectations.expectations.row_conditions import Column

    e = gx.expectations
    checks = []
    for domain in domains:
        checks.append(
            Check(
                f"{domain.role}_has_two_classes",
                f"the {domain.role} domain {domain.name!r} has at least 2 classes",
                "folders",
                e.ExpectColumnUniqueValueCountToBeBetween(
                    column="label",
                    min_value=2,
                    row_condition=(Column("domain") == domain.name)
                    & (Column("split") == "train")
                    & (Column("exists") == True),  # noqa: E712
                ),
                fallback_items=((domain.path if domain.split_by_content else domain.path / "train").as_posix(),),
                detail=lambda row: "",
            )
        )
        checks.append(
            Check(
                f"{domain.role}_labels_known_in_train",
                f"every val/test label of {domain.name!r} is a class of its train split",
                "files",
                e.ExpectColumnValuesToBeInSet(
                    column="label",
                    value_set=train_classes[domain.name],
                    row_condition=(Column("domain") == domain.name) & (Column("split") != "train"),
                ),
                detail=lambda row: f"class {row['label']!r} has no train folder",
            )
        )
    return checks


def _source_target_checks(params: Params, domains: list[Domain], train_classes: dict[str, list[str]]) -> list[Check]:
    """The target's classes among the source's (an error when the target has no labels to learn them from)."""
    import great_expectations as gx
    from great_expectations.expectations.row_conditions import Column

    e = gx.expectations
    checks = []
    *sources, target = domains
    if sources and sources[0].name != target.name:
        source = sources[0]
        no_target_labels = params.data.labeled_per_class == 0
        checks.append(
            Check(
                "target_classes_in_source",
                "every target class is a source class "
                "(needed by source_only, dann and dann_mcc_pl: they predict the source's classes)",
                "folders",
                e.ExpectColumnValuesToBeInSet(
                    column="label",
                    value_set=train_classes[source.name],
                    row_condition=(Column("domain") == target.name) & Column("label").is_not_null(),
                ),
                detail=lambda row: f"class {row['label']!r} is not a source class",
                # Without target labels the source's classes are the only ones a model can learn.
                severity="error" if no_target_labels else "warning",
            )
        )
    return checks


def _count_detail(row: pd.Series) -> str:
    if not row["exists"]:
        return "class folder missing (0 images)"
    found = f"{row['n_readable']} readable of {row['n_files']} files"
    if row["split_by"] == "content":
        return f"{found} (each image's split comes from its content: add images, or make split folders)"
    return found


def run_checks(checks: list[Check], tables: dict[str, pd.DataFrame]) -> list[dict[str, Any]]:
    """Run each table's checks as one GX suite on one batch; return a result per check."""
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    # GX's INFO lines ("Created temporary directory ... for ephemeral docs site") are not ours to show;
    # that module's logger has its own level, so the parent's does not reach it.
    for name in ("great_expectations", "great_expectations.data_context.types.base"):
        logging.getLogger(name).setLevel(logging.ERROR)
    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    source = context.data_sources.add_pandas("autotransfer")
    by_id = {check.id: check for check in checks}
    results: dict[str, dict[str, Any]] = {}
    for table_name, table in tables.items():
        table_checks = [c for c in checks if c.table == table_name]
        if not table_checks:
            continue
        indexed = table.reset_index(drop=True)
        batch = (
            source.add_dataframe_asset(table_name)
            .add_batch_definition_whole_dataframe(table_name)
            .get_batch(batch_parameters={"dataframe": indexed})
        )
        suite = gx.ExpectationSuite(name=f"autotransfer.{table_name}", expectations=[])
        for check in table_checks:
            check.expectation.meta = {"check_id": check.id}
            suite.add_expectation(check.expectation)
        outcome = batch.validate(
            suite, result_format={"result_format": "COMPLETE", "unexpected_index_column_names": ["item"]}
        )
        item_rows = indexed.drop_duplicates("item").set_index("item", drop=False)
        for result in outcome.results:
            config = result.expectation_config
            assert config is not None and config.meta is not None  # GX echoes the suite's expectations
            check = by_id[config.meta["check_id"]]
            results[check.id] = _check_result(check, result, item_rows)
    return [results[check.id] for check in checks]


def _check_result(check: Check, result: Any, item_rows: pd.DataFrame) -> dict[str, Any]:
    if result.exception_info and result.exception_info.get("raised_exception"):
        message = result.exception_info.get("exception_message")
        raise RuntimeError(f"great expectations could not evaluate check {check.id!r}: {message}")
    unexpected = result.result.get("unexpected_index_list")
    offending: list[dict[str, str]] = []
    if unexpected:
        seen = set()
        for entry in unexpected:
            item = entry["item"]
            if item in seen:
                continue
            seen.add(item)
            offending.append({"item": item, "detail": str(check.detail(item_rows.loc[item]) or "")})
    elif not result.success:
        observed = result.result.get("observed_value")
        offending = [{"item": item, "detail": f"observed: {observed}"} for item in check.fallback_items]
    return {
        "id": check.id,
        "description": check.description,
        "severity": check.severity,
        "success": bool(result.success),
        "unexpected_count": len(offending),
        "offending": sorted(offending, key=lambda o: o["item"]),
    }


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
