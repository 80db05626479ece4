"""The validate stage's expectation suite: each check a Great Expectations expectation over one
of the scan's tables (``files``, ``folders``, ``content``: stages/validate.py builds them), and
how a check's result names the files or folders at fault.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pandas as pd

from autotransfer.config import Params, ValidationConfig
from autotransfer.io.manifest import SPLITS, Domain, Scan


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
