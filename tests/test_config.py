from pathlib import Path

import pytest

from autotransfer.config import ConfigError, Params, load_params, resolve_domain

REPO = Path(__file__).resolve().parents[1]


def test_repo_params_file_loads_and_matches_defaults():
    # given the committed params.yaml
    # when it is loaded
    params = load_params(REPO / "params.yaml")
    # then it is valid and spells out the defaults
    assert params == Params()


def test_unknown_key_names_its_dotted_path(tmp_path):
    # given a typo in a nested section
    path = tmp_path / "params.yaml"
    path.write_text("data:\n  targett: digits\n")
    # when loaded, then the error names the key and what is allowed
    with pytest.raises(ConfigError) as err:
        load_params(path)
    message = str(err.value)
    assert "data.targett: unknown key" in message
    assert "target" in message and str(path) in message


def test_unknown_section_is_an_error(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text("trian:\n  lr: 0.1\n")
    with pytest.raises(ConfigError, match="trian: unknown key"):
        load_params(path)


def test_bad_value_names_key_value_and_expectation(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text("demo:\n  image_size: big\n")
    with pytest.raises(ConfigError) as err:
        load_params(path)
    message = str(err.value)
    assert "demo.image_size" in message and "'big'" in message and "integer" in message


def test_out_of_range_value_says_what_is_allowed():
    with pytest.raises(ConfigError, match=r"data.labeled_per_class: .*greater than or equal to 0.*-3"):
        load_params(None, ["data.labeled_per_class=-3"])


def test_strict_types_do_not_coerce_strings_to_numbers():
    # "5" in YAML quotes is a string: strict mode refuses it rather than guessing
    with pytest.raises(ConfigError, match="validation.min_side"):
        load_params(None, ['validation.min_side="5"'])


def test_overrides_parse_yaml_values_and_win_over_the_file(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text("data:\n  target: digits\n")
    params = load_params(path, ["data.target=digits-m", "data.labeled_per_class=10", "data.labeled_per_class=null"])
    assert params.data.target == "digits-m"
    assert params.data.labeled_per_class is None


@pytest.mark.parametrize("override", ["data.target", "=3", "data.target.x=1"])
def test_malformed_override_is_a_config_error(override):
    with pytest.raises(ConfigError):
        load_params(None, [override])


def test_missing_explicit_params_file_is_an_error(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_params(tmp_path / "nope.yaml")


def test_invalid_yaml_names_the_file(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text("data: [unclosed\n")
    with pytest.raises(ConfigError, match="p.yaml: not valid YAML"):
        load_params(path)


def test_params_are_frozen():
    params = Params()
    with pytest.raises(Exception):
        params.data.target = "x"  # type: ignore[misc]


def test_domain_is_a_name_under_root_or_a_path():
    data = Params().data
    assert resolve_domain(data, "digits") == Path("data/digits")
    assert resolve_domain(data, "/srv/images/cats") == Path("/srv/images/cats")
    assert resolve_domain(data, "other/folder") == Path("other/folder")


def test_a_strategy_param_must_name_a_catalog_row():
    from autotransfer.catalog import KINDS

    assert load_params(None, ["strategy.force=dann"]).strategy.force == "dann"
    with pytest.raises(ConfigError, match=r"strategy\.force.*unknown strategy 'finetune_everything'.*linear_probe"):
        load_params(None, ["strategy.force=finetune_everything"])
    with pytest.raises(ConfigError, match=r"train\.augment_per_strategy.*unknown strategy 'probe'"):
        load_params(None, ["train.augment_per_strategy={probe: {color: true}}"])
    # the params' schema offers exactly the catalog's names
    schema = Params.model_json_schema()["$defs"]["StrategyConfig"]["properties"]["force"]
    assert next(s for s in schema["anyOf"] if "enum" in s)["enum"] == list(KINDS)


def test_a_source_free_run_needs_pretrained_weights():
    assert load_params(None, ["data.source=null"]).data.source is None
    with pytest.raises(ConfigError, match="backbone.weights=null trains the backbone on data.source"):
        load_params(None, ["data.source=null", "backbone.weights=null"])


def test_each_target_registers_under_its_own_name_unless_told():
    from autotransfer.config import registered_model_name

    assert registered_model_name(load_params(None, [])) == "autotransfer-digits"
    assert registered_model_name(load_params(None, ["data.target=/home/me/My Photos/"])) == "autotransfer-My-Photos"
    assert registered_model_name(load_params(None, ["registry.model_name=team"])) == "team"
    with pytest.raises(ConfigError, match="registry.model_name"):
        load_params(None, ["registry.model_name=a/b"])


def test_class_folder_shares_leave_train_a_share_and_alpha_background_is_rgb():
    with pytest.raises(ConfigError, match="val_share \\+ test_share"):
        load_params(None, ["data.val_share=0.5", "data.test_share=0.45"])
    with pytest.raises(ConfigError, match="data.alpha_background"):
        load_params(None, ["data.alpha_background=[0, 0]"])
    assert load_params(None, ["data.alpha_background=[0, 0, 0]"]).data.alpha_background == [0, 0, 0]


@pytest.mark.parametrize("value", [".inf", ".nan", "0.5", "0"])
def test_a_request_timeout_that_is_not_whole_finite_seconds_is_refused_by_key(value):
    # .inf overflowed, 0.5 became 0 (every call failed) and .nan was accepted
    with pytest.raises(ConfigError, match="registry.request_timeout"):
        load_params(None, [f"registry.request_timeout={value}"])


def _float_keys() -> list[str]:
    """Every dotted params key whose type admits a float (float, float | None, ...), nested sections too."""
    from pydantic import BaseModel

    from autotransfer.config import Params

    keys = []

    def walk(model: type[BaseModel], prefix: str) -> None:
        for name, field in model.model_fields.items():
            annotation = field.annotation
            args = getattr(annotation, "__args__", ())
            if isinstance(annotation, type) and issubclass(annotation, BaseModel):
                walk(annotation, f"{prefix}{name}.")
            elif annotation is float or float in args:
                keys.append(f"{prefix}{name}")

    walk(Params, "")
    return keys


FLOAT_KEYS = _float_keys()


def test_the_float_keys_are_found():
    assert len(FLOAT_KEYS) >= 15 and {"train.lr", "strategy.similar_zero_shot", "registry.retry_delay"} <= set(FLOAT_KEYS)


@pytest.mark.parametrize("key", FLOAT_KEYS)
def test_no_float_parameter_takes_infinity_or_nan(key):
    for value in (".inf", "-.inf", ".nan"):
        with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
            load_params(None, [f"{key}={value}"])


def test_an_empty_params_file_is_an_error_not_silently_the_defaults(tmp_path):
    # given a params file truncated to 0 bytes (a full disk, an editor crash)
    path = tmp_path / "params.yaml"
    path.write_bytes(b"")
    # then it is refused by name: a scheduled run would otherwise train on every default
    with pytest.raises(ConfigError, match=f"{path}: empty"):
        load_params(path)
    path.write_text("# only a comment\n")
    with pytest.raises(ConfigError, match=f"{path}: empty"):
        load_params(path)


def test_a_params_file_that_is_not_utf8_names_the_file(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_bytes("data:\n  target: caf\u00e9\n".encode("latin-1"))
    with pytest.raises(ConfigError, match=f"{path}: not UTF-8 text"):
        load_params(path)
