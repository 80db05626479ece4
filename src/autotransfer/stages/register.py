"""The register stage: log the run to MLflow, register the model, promote it if it beats the champion.

The work is ``registry.register.register`` (``registry`` is the one package that talks to
MLflow); this module is the stage's entry in the pipeline, like the others. Last, it
writes ``reports/report.html`` (the whole run, decision included) and attaches it to the
version's MLflow run.
"""

from __future__ import annotations

from autotransfer.artifacts import RegistrationReport
from autotransfer.config import Params


def register(params: Params, progress: bool | None = None) -> RegistrationReport:
    """The register stage (``progress`` unused: it logs and registers files already written)."""
    from autotransfer.registry.register import attach_report
    from autotransfer.registry.register import register as log_and_register
    from autotransfer.stages.report import write_run_report

    report = log_and_register(params)
    attach_report(params, report.run_id, write_run_report(params))
    return report
