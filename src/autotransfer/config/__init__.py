"""params.yaml as one strict, frozen pydantic model.

Every knob of the pipeline lives in params.yaml; DVC reads the same file by key, and the
CLI and the flows override it with ``section.key=value`` strings. A mistyped or unknown
key is an error that names its dotted path: silently ignoring ``train.lr`` when the user
meant ``train.learning_rate`` is how experiments go wrong without anyone noticing.
"""

from __future__ import annotations

from autotransfer.config.params import (
    DEFAULT_PARAMS_FILE,
    MODEL_SECTIONS,
    Params,
    apply_override,
    describe_error,
    load_params,
    model_params_hash,
    params_from_dict,
    registered_model_name,
    resolve_domain,
)
from autotransfer.config.sections import (
    BackboneConfig,
    DataConfig,
    DemoConfig,
    OutputPath,
    PretrainConfig,
    RegistryConfig,
    ReportsConfig,
    Section,
    ServingLimits,
    SimilarityConfig,
    StrategyConfig,
    StrategyName,
    ValidationConfig,
)
from autotransfer.config.training import AugmentConfig, DannConfig, HealthConfig, RaceConfig, TrainConfig
from autotransfer.errors import ConfigError

__all__ = [
    "DEFAULT_PARAMS_FILE",
    "MODEL_SECTIONS",
    "AugmentConfig",
    "BackboneConfig",
    "ConfigError",
    "DannConfig",
    "DataConfig",
    "DemoConfig",
    "HealthConfig",
    "OutputPath",
    "Params",
    "PretrainConfig",
    "RaceConfig",
    "RegistryConfig",
    "ReportsConfig",
    "Section",
    "ServingLimits",
    "SimilarityConfig",
    "StrategyConfig",
    "StrategyName",
    "TrainConfig",
    "ValidationConfig",
    "apply_override",
    "describe_error",
    "load_params",
    "model_params_hash",
    "params_from_dict",
    "registered_model_name",
    "resolve_domain",
]
