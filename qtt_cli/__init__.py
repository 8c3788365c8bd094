"""qtt: Quick-Tune from the command line.

Given an image dataset and a time budget, find which pretrained model to finetune and how, finetune
it, and hand back the best model. The CLI (``qtt``) is a thin layer over this package; scripts can
use the same functions, e.g. ``from qtt_cli.tuner import tune, TuneSettings``.
"""

__version__ = "0.1.0"
