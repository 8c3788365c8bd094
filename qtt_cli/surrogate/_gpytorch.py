"""gpytorch, imported without linear_operator's ``torch.jit.script`` deprecation warning: it is not ours to
fix, and it would otherwise print on every command that loads the predictors."""

import warnings

with warnings.catch_warnings():
    warnings.filterwarnings("ignore", message=r".*torch\.jit\.script.*", category=FutureWarning)
    import gpytorch

__all__ = ["gpytorch"]
