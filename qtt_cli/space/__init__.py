"""The search space: what a pipeline configuration is, which values it may take, and its table encoding."""

from .config import ConfigError, PipelineConfig
from .encoding import TABLE_COLUMNS, decode, encode
from .quicktune import build_space, describe_space, sample, sample_configs, to_pipeline_config
from .spacefile import SpaceFileError, load_space

__all__ = [
    "TABLE_COLUMNS",
    "ConfigError",
    "PipelineConfig",
    "SpaceFileError",
    "build_space",
    "decode",
    "describe_space",
    "encode",
    "load_space",
    "sample",
    "sample_configs",
    "to_pipeline_config",
]
