"""Finetuning strategies and training methods, each an :class:`~qtt_cli.worker.extensions.Extension`.

Importing this package registers them (one module per strategy; add the import here).
"""

from .hvp import HardViewSelection  # noqa: F401  -- hard views (HVP)
from .spg import SequentialPolicyGradient  # noqa: F401  -- Sequential Policy Gradient (SPG)
