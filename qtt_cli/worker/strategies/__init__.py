"""Finetuning strategies and training methods, each an :class:`~qtt_cli.worker.extensions.Extension`.

Importing this package registers them (one module per strategy; add the import here).
"""

# Table 7's finetuning strategies sp_reg, delta_reg, bss_reg, cotuning_reg. StochNorm is a model
# transformation (``stochnorm``), applied by the worker before the optimizer is built.
from .bss import BatchSpectralShrinkage  # noqa: F401  -- bss_reg
from .cotuning import CoTuning  # noqa: F401  -- cotuning_reg
from .delta import DeltaRegularization  # noqa: F401  -- delta_reg
from .hvp import HardViewSelection  # noqa: F401  -- hard views (HVP)
from .l2sp import SPRegularization  # noqa: F401  -- sp_reg
from .spg import SequentialPolicyGradient  # noqa: F401  -- Sequential Policy Gradient (SPG)
