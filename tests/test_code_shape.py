"""The code stays in pieces a reader can hold: no function over 80 lines, no module over 400 (tests/code_shape.py)."""

from code_shape import REPO, functions, modules, stage_places, strategy_places

from autotransfer.catalog import KINDS

MAX_FUNCTION_LINES = 80
MAX_MODULE_LINES = 400  # a data table that grows past it goes into its own module


def test_no_function_over_80_lines_and_no_module_over_400():
    assert [p for p in functions(REPO) if p.lines > MAX_FUNCTION_LINES] == []
    assert [p for p in modules(REPO) if p.lines > MAX_MODULE_LINES] == []


def test_the_product_runs_stages_through_their_objects_and_names_strategies_only_in_the_catalog_and_the_table():
    # a stage's function is imported only where its Stage is declared (stages/pipeline.py), and by
    # `autotransfer validate` for the scan's console listing (cli.cmd_validate says why)
    places = stage_places(REPO, ("src", "flows", "tasks", "bench"))
    assert [p.split(":")[0] + " " + p.split(" ", 1)[1] for p in places if " imports " in p] == [
        "src/autotransfer/cli.py imports validate"]
    # the flow and the tasks run whatever STAGES holds: neither names a stage
    assert [p for p in places if p.startswith(("flows/", "tasks/"))] == []
    # a strategy's name appears in the product only in the catalog (its one list, with its traits), the plan's
    # table, and where code is about that one strategy: a rule that moves it (the plan's adjustments), the
    # floor's probe (train), and each strategy's own class; config's allowed values come from the catalog
    named = {p.split(":")[0] for p in strategy_places(REPO, tuple(KINDS))}
    assert named <= {
        "src/autotransfer/analysis/planning.py",
        "src/autotransfer/stages/train.py",
        "src/autotransfer/transfer/strategies.py",
        "src/autotransfer/transfer/adaptation.py",
        "src/autotransfer/transfer/probe.py",
    }, named
