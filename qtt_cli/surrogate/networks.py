"""The networks of the predictors: feature extractor, deep-kernel GP and cost MLP.

Following gpytorch's deep-kernel example, the GP is an ``ExactGP`` subclass that only declares its mean,
kernel and ``forward``; the feature extractor is an ``nn.Module`` submodule applied in ``forward``; the
likelihood and the marginal log-likelihood are separate objects, trained by the caller's loop.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ._gpytorch import gpytorch
from .features import FeatureLayout

__all__ = ["CostNet", "CurveEncoder", "DeepKernelGP", "FeatureExtractor", "MeanNet", "Predictors"]


class CurveEncoder(nn.Module):
    """A small 1-D CNN over the zero-padded curve prefix (values / 100) and its observed-mask (as DyHPO):
    two convolutions of width 3, max-pool over time, a linear layer.

    The 1-D convolutions are written as ``Conv2d`` with a ``(1, 3)`` kernel over a height-1 image: the
    same operation, but on CPU PyTorch's Conv2d kernels are 30-60x faster than Conv1d's at these sizes
    (measured: 2 ms vs 60-140 ms forward+backward for 256 prefixes of 50 epochs).
    """

    def __init__(self, out_dim: int = 8, channels: int = 16) -> None:
        super().__init__()
        self.convs = nn.Sequential(
            nn.Conv2d(2, channels, kernel_size=(1, 3), padding=(0, 1)),
            nn.ReLU(),
            nn.Conv2d(channels, channels, kernel_size=(1, 3), padding=(0, 1)),
            nn.ReLU(),
        )
        self.out = nn.Linear(channels, out_dim)

    def forward(self, prefix: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        hidden = self.convs(torch.stack([prefix, mask], dim=1)[:, :, None, :])  # [batch, channels, 1, time]
        return self.out(hidden.amax(dim=(2, 3)))


def _last_observed(x: torch.Tensor, slices: dict[str, slice]) -> tuple[torch.Tensor, torch.Tensor]:
    """Per input row: the last value of its curve prefix (in [0, 1]; 0 without one), and whether it has one."""
    prefix = x[:, slices["prefix"]]
    count = x[:, slices["prefix_len"]][:, 1]
    started = count > 0
    last = prefix.gather(1, (count.long() - 1).clamp(min=0)[:, None]).squeeze(1)
    return last * started.to(x.dtype), started


class FeatureExtractor(nn.Module):
    """Maps an input row (see ``features``) to a low-dimensional vector.

    The model one-hot goes through a learned linear embedding whose input size is the number of model
    columns (all of them: the reference code sized it before one-hot encoding and dropped most models).
    Besides the CNN embedding of the prefix, the last and best observed values are given explicitly: a
    max-pooled CNN sees the best value easily but the last one only with effort, and the last value is
    the strongest single predictor of the next one.

    Training methods the meta-dataset never used (SPG, HVP: ``layout.method_columns``) shift the model
    embedding by a learned vector per method that starts at zero, so meta-learned weights predict exactly
    as before until the run's observations teach what a method does. It is a plain parameter, not a
    ``Linear``: creating it draws no random numbers, so the other weights' initialisation does not change.
    """

    def __init__(
        self,
        layout: FeatureLayout,
        *,
        out_dim: int = 16,
        hidden: tuple[int, ...] = (64, 64),
        model_dim: int = 8,
        curve_dim: int = 8,
    ) -> None:
        """``curve_dim = 0`` leaves out the CNN (the last/best values and the prefix length stay)."""
        super().__init__()
        self.slices = layout.slices
        self.curve_length = layout.curve_length
        self.model_embedding = nn.Linear(layout.sizes["model"], model_dim, bias=False)
        self.method_embedding = nn.Parameter(torch.zeros(layout.sizes["method"], model_dim))
        self.curve_encoder = CurveEncoder(curve_dim) if curve_dim else None
        sizes = layout.sizes
        width = sizes["hp"] + model_dim + 1 + sizes["meta"] + curve_dim + 3
        layers: list[nn.Module] = []
        for h in hidden:
            layers += [nn.Linear(width, h), nn.ReLU()]
            width = h
        layers.append(nn.Linear(width, out_dim))
        self.mlp = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.slices
        prefix = x[:, s["prefix"]]
        length, count = x[:, s["prefix_len"]].unbind(dim=1)
        positions = torch.arange(self.curve_length, device=x.device, dtype=x.dtype)
        mask = (positions[None, :] < count[:, None]).to(x.dtype)
        last = _last_observed(x, s)[0][:, None]
        best = prefix.amax(dim=1, keepdim=True)
        parts = [
            x[:, s["hp"]],
            self.model_embedding(x[:, s["model"]]) + x[:, s["method"]] @ self.method_embedding,
            x[:, s["fidelity"]],
            x[:, s["meta"]],
            *([self._encode_curve(prefix, mask, count)] if self.curve_encoder is not None else []),
            last,
            best,
            length[:, None],
        ]
        return self.mlp(torch.cat(parts, dim=1))

    def _encode_curve(self, prefix: torch.Tensor, mask: torch.Tensor, count: torch.Tensor) -> torch.Tensor:
        """The CNN over the prefix slots, cut 3 slots after the longest prefix of the batch.

        Exact, not an approximation: an output position two or more slots past a prefix's end sees only
        zeros (receptive field 5), so every such position has the same value and the max-pool needs just
        one of them; keeping 3 past the longest prefix keeps at least one for every row. Search batches hold
        short prefixes, so this does a fraction of the convolution work.
        """
        width = min(self.curve_length, int(count.max().item()) + 3)
        return self.curve_encoder(prefix[:, :width], mask[:, :width])


class DeepKernelGP(gpytorch.models.ExactGP):
    """Exact GP with a scaled Matérn-5/2 kernel on the feature extractor's output; its mean is a constant,
    plus ``mean_net(x)`` when there is one (``MeanNet``: the priors' expectation of each input)."""

    def __init__(self, extractor: FeatureExtractor, likelihood: gpytorch.likelihoods.GaussianLikelihood) -> None:
        super().__init__(None, None, likelihood)
        self.feature_extractor = extractor
        self.mean_module = gpytorch.means.ConstantMean()
        self.covar_module = gpytorch.kernels.ScaleKernel(gpytorch.kernels.MaternKernel(nu=2.5))
        self.mean_net: MeanNet | None = None

    def forward(self, x: torch.Tensor) -> gpytorch.distributions.MultivariateNormal:
        z = self.feature_extractor(x)
        mean = self.mean_module(z)
        if self.mean_net is not None:
            mean = mean + self.mean_net(x)
        return gpytorch.distributions.MultivariateNormal(mean, self.covar_module(z))

    def set_mean_level(self, value: float) -> None:
        """Start the mean at ``value`` (the training data's average accuracy): the constant, or, with a mean
        network, its output (the constant is then the run's offset from it and starts at 0)."""
        if self.mean_net is None:
            self.mean_module.constant.data.fill_(value)
        else:
            self.mean_module.constant.data.fill_(0.0)
            self.mean_net.start_at(value)


class _ScalarNet(nn.Module):
    """One number per input: a feature extractor, a ReLU and a linear layer (the cost and mean networks)."""

    def __init__(self, extractor: FeatureExtractor, width: int) -> None:
        super().__init__()
        self.extractor = extractor
        self.head = nn.Linear(width, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.extractor(x))).squeeze(-1)


class CostNet(_ScalarNet):
    """MLP on the same inputs; predicts the standardised log seconds of one epoch.

    It sees the curve only through its last/best values and length, not through the CNN: an epoch's cost
    depends on the model, the data and the hyperparameters, not on the shape of the accuracy curve, and
    the CNN would double the cost of a training step.
    """

    def __init__(self, layout: FeatureLayout, *, hidden: tuple[int, ...] = (64, 64), out_dim: int = 16) -> None:
        super().__init__(FeatureExtractor(layout, out_dim=out_dim, hidden=hidden, curve_dim=0), out_dim)


class MeanNet(_ScalarNet):
    """The GP's learnt prior mean: the accuracy expected at an input's epoch from its configuration, the
    dataset's meta-features and the curve prefix, before the run has observed anything like it.

    Why: with a constant mean, what the priors know about a configuration reaches a prediction only through
    its covariance with what the run has observed. An unstarted configuration is then predicted from the
    run's few, mostly weak, first epochs, whatever its model: on PLT_NET the searches ranked unstarted
    configurations by their first epoch with a rank correlation of about 0.1, while a gradient-boosted
    regression on the other 17 datasets' records, seeing no observation of PLT_NET at all, reaches 0.5
    (0.7 for a configuration's best epoch). Trained with its own squared error next to the GP's likelihood
    (``surrogate._Trainer``), it is the meta-dataset's expectation of each input, the empirical-Bayes prior
    mean; the kernel then models how the run departs from it.

    It predicts levels, also for a started curve (whose prefix it sees). A variant that predicted a started
    curve's change from its last value (``mean="change"``, shipped for a day) expected a climbing curve to
    keep climbing where this one expects it to fall back by about 5 points with nothing else observed
    (``benchmarks/diag_prior_climb.py``), but it was worse on held-out datasets once conditioned on their
    observations (validation NLL -0.70 against -0.87), cost about 0.03 of regret at 4 h on the replay in
    both protocols, and its gain on real training from random weights (+5.4 +- 4.1 points of best
    validation accuracy over six fresh end-to-end seeds) fell short of the two standard errors required
    before the run: it was removed (``docs/bench/end-to-end/change-vs-level-s4-9``).
    """

    def __init__(self, layout: FeatureLayout, hyper: dict) -> None:
        extractor = FeatureExtractor(
            layout, out_dim=hyper["feature_dim"], hidden=tuple(hyper["hidden"]), model_dim=hyper["model_dim"],
            curve_dim=hyper["curve_dim"],
        )  # fmt: skip
        super().__init__(extractor, hyper["feature_dim"])

    def start_at(self, value: float) -> None:
        """Output ``value`` (an accuracy in (0, 1)) for every input, as a start."""
        value = min(max(value, 1e-3), 1 - 1e-3)
        nn.init.zeros_(self.head.weight)
        nn.init.constant_(self.head.bias, math.log(value / (1 - value)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(super().forward(x))


class Predictors(nn.Module):
    """Every trained parameter of a surrogate, so that one ``state_dict`` saves them all."""

    def __init__(self, layout: FeatureLayout, hyper: dict) -> None:
        super().__init__()
        hidden = tuple(hyper["hidden"])
        likelihood = gpytorch.likelihoods.GaussianLikelihood(noise_constraint=gpytorch.constraints.GreaterThan(1e-5))
        extractor = FeatureExtractor(
            layout, out_dim=hyper["feature_dim"], hidden=hidden, model_dim=hyper["model_dim"],
            curve_dim=hyper["curve_dim"],
        )  # fmt: skip
        self.gp = DeepKernelGP(extractor, likelihood)
        # Targets are accuracies in [0, 1]: start from a plausible scale instead of gpytorch's unit defaults
        # (noise variance 0.69 would need thousands of steps to shrink).
        likelihood.noise = 1e-2
        self.gp.covar_module.outputscale = 0.1
        self.gp.covar_module.base_kernel.lengthscale = 1.0
        self.cost = CostNet(layout, hidden=hidden, out_dim=hyper["feature_dim"])
        if hyper["mean"] == "learnt":  # built last: the other weights draw the same random numbers either way
            self.gp.mean_net = MeanNet(layout, hyper)
        elif hyper["mean"] != "constant":
            raise ValueError(
                f"unknown GP mean {hyper['mean']!r} (known: 'learnt', 'constant'); priors written by another qtt "
                "version can be retrained with `qtt meta-train`"
            )
        self.gp.set_mean_level(0.5)

    @property
    def likelihood(self) -> gpytorch.likelihoods.GaussianLikelihood:
        return self.gp.likelihood
