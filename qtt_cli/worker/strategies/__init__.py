"""Finetuning strategies and training methods, each an :class:`~qtt_cli.worker.extensions.Extension`.

Importing this package registers them (one module per strategy; add the import here).
"""
