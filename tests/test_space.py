"""qtt_cli.space: the default space matches the meta-dataset, conditions hold, space files, the encoding."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from ConfigSpace import Constant, OrdinalHyperparameter

from qtt_cli.space import (
    TABLE_COLUMNS,
    PipelineConfig,
    SpaceFileError,
    build_space,
    decode,
    describe_space,
    encode,
    load_space,
    sample_configs,
    to_pipeline_config,
)
from qtt_cli.space.config import ADAM_LIKE
from qtt_cli.space.encoding import table_view
from qtt_cli.space.quicktune import CONDITIONS, HYPERPARAMETERS, OFF

TABLE = Path(__file__).parents[2] / "shared/data/quicktune-extended/table.csv"
MODELS = ["dla46x_c.in1k", "edgenext_xx_small.in1k", "mobilevit_xxs.cvnets_in1k"]
# Table 7's finetuning strategies and their values (also the meta-dataset's)
STRATEGIES = {
    "stoch_norm": [False, True],
    "sp_reg": [0.0, 1e-4, 1e-3, 1e-2, 0.1],
    "delta_reg": [0.0, 1e-4, 1e-3, 1e-2, 0.1],
    "bss_reg": [0.0, 1e-4, 1e-3, 1e-2, 0.1],
    "cotuning_reg": [0.0, 0.5, 1.0, 2.0, 4.0],
}
TABLE_NAMES = {"dla46x_c.in1k": "dla46x_c", "edgenext_xx_small.in1k": "edgenext_xx_small"}


@pytest.fixture(scope="module")
def table() -> pd.DataFrame:
    if not TABLE.is_file():
        pytest.skip(f"meta-dataset table not found at {TABLE} (it lives in ../shared next to the repo)")
    return pd.read_csv(TABLE, index_col=0)


@pytest.fixture(scope="module")
def samples() -> list[PipelineConfig]:
    return sample_configs(build_space(MODELS), 600, seed=0)


def _active_values(table: pd.DataFrame, name: str) -> set:
    """The values of ``name`` in rows where it is active (the table fills inactive ones with defaults)."""
    if f"cat:{name}:None" in table.columns or any(c.startswith(f"cat:{name}:") for c in table.columns):
        cols = [c for c in table.columns if c.startswith(f"cat:{name}:")]
        values = table[cols].idxmax(axis=1).str.split(":", n=2).str[2]
    else:
        values = table[name]
    if name in CONDITIONS:
        parent, active = CONDITIONS[name]
        parent_cols = [c for c in table.columns if c.startswith(f"cat:{parent}:")]
        parent_values = table[parent_cols].idxmax(axis=1).str.split(":", n=2).str[2]
        values = values[parent_values.isin(active)]
    return set(values.tolist())


# --- the default space ---------------------------------------------------------------------------------


def test_value_sets_equal_the_meta_dataset(table):
    for hp in HYPERPARAMETERS:
        expected = _active_values(table, hp.name)
        ours = {-1.0 if v == OFF else v for v in hp.values}
        if isinstance(hp.default, bool):
            ours = {int(v) for v in ours}
        assert ours == expected, hp.name


def test_space_has_every_pipeline_field_and_the_hub_models():
    space = build_space(MODELS, seed=1)
    assert set(space.keys()) == set(PipelineConfig.__dataclass_fields__)
    assert list(space["model"].choices) == MODELS
    assert not any(isinstance(hp, Constant) for hp in space.values())  # every Table 7 hyperparameter is searched
    for name, values in STRATEGIES.items():  # with exactly the table's values
        hp = space[name]
        assert (list(hp.sequence) if isinstance(hp, OrdinalHyperparameter) else list(hp.choices)) == values, name
    assert to_pipeline_config(space.get_default_configuration()) == PipelineConfig(model=MODELS[0])


def test_conditions_hold_over_many_samples(samples):
    seen = {c.opt for c in samples} | {c.sched for c in samples} | {c.data_augmentation for c in samples}
    assert {"momentum", "adamp", "plateau", "step", "random_augment", "auto_augment"} <= seen
    for c in samples:
        assert (c.momentum is not None) == (c.opt == "momentum")
        assert (c.opt_betas is not None) == (c.opt in ADAM_LIKE)
        assert (c.patience_epochs is not None) == (c.sched == "plateau")
        assert (
            (c.decay_rate is not None) == (c.decay_epochs is not None) == (c.sched in ("step", "multistep"))
        )
        assert (
            (c.ra_num_ops is not None)
            == (c.ra_magnitude is not None)
            == (c.data_augmentation == "random_augment")
        )
        assert (c.auto_augment is not None) == (c.data_augmentation == "auto_augment")
        assert c.model in MODELS
    for name, values in STRATEGIES.items():  # the strategies are sampled, each value of the table
        assert {getattr(c, name) for c in samples} == set(values), name


def test_off_values_and_types(samples):
    assert {c.clip_grad for c in samples} == {None, 1.0, 10.0}
    assert {c.layer_decay for c in samples} == {None, 0.65, 0.75}
    for c in samples[:50]:
        assert type(c.model) is str and type(c.batch_size) is int and type(c.linear_probing) is bool
        assert PipelineConfig.from_dict(c.to_dict()) == c


def test_sampling_is_reproducible():
    space = build_space(MODELS)
    assert sample_configs(space, 5, seed=3) == sample_configs(build_space(MODELS), 5, seed=3)
    assert sample_configs(space, 0) == []


def test_describe_space_rows():
    rows = {row["name"]: row for row in describe_space(build_space(MODELS))}
    assert rows["model"]["values"] == MODELS
    assert rows["momentum"] == {
        "name": "momentum",
        "values": [0.0, 0.8, 0.9, 0.95, 0.99],
        "default": 0.9,
        "condition": "opt == momentum",
    }
    assert rows["opt_betas"]["condition"] == "opt in {adam, adamw, adamp}"
    assert rows["clip_grad"]["values"] == [1.0, 10.0, "off"]
    assert rows["stoch_norm"] == {"name": "stoch_norm", "values": [False, True], "default": False, "condition": ""}
    assert rows["cotuning_reg"]["values"] == [0.0, 0.5, 1.0, 2.0, 4.0] and rows["cotuning_reg"]["condition"] == ""


# --- space files ---------------------------------------------------------------------------------------


def _space(tmp_path: Path, text: str, models=MODELS):
    path = tmp_path / "space.yaml"
    path.write_text(text)
    return load_space(path, models, seed=0)


def test_space_file_restricts_and_extends(tmp_path):
    space = _space(
        tmp_path,
        "model: [dla46x_c]\nlr: [1e-3, 0.1]\nbatch_size: 16\nopt: [momentum, sgd]\n"
        "weight_decay: {add: [0.05]}\nclip_grad: [off, 1]\nlinear_probing: [false]\n",
    )
    configs = sample_configs(space, 200, seed=1)
    assert {c.model for c in configs} == {"dla46x_c.in1k"}
    assert {c.lr for c in configs} == {1e-3, 0.1}
    assert {c.batch_size for c in configs} == {16}
    assert {c.opt for c in configs} == {"momentum", "sgd"}
    assert {c.clip_grad for c in configs} == {None, 1.0}
    assert 0.05 in {c.weight_decay for c in configs}
    assert all(c.opt_betas is None and not c.linear_probing for c in configs)
    assert "opt_betas" not in space  # its condition can never hold
    assert list(space["weight_decay"].sequence) == [0.0, 1e-5, 1e-4, 1e-3, 1e-2, 0.05, 0.1]


def test_space_file_fixing_the_parent_makes_the_child_unconditional(tmp_path):
    space = _space(tmp_path, "opt: momentum\nmomentum: [0.9, 0.99]\nsched: plateau\n")
    assert not space.conditions or all(
        c.child.name not in ("momentum", "patience_epochs") for c in space.conditions
    )
    configs = sample_configs(space, 30, seed=0)
    assert {c.momentum for c in configs} == {0.9, 0.99}
    assert all(c.patience_epochs in (2, 5) for c in configs)


@pytest.mark.parametrize("name", ["space-small.yaml", "space-demo.yaml", "space-lite-cpu.yaml"])
def test_example_space_files_load(name):
    from qtt_cli.hub import load_hub

    example = Path(__file__).parents[1] / "examples" / name
    space = load_space(example, [m.name for m in load_hub("tiny").models])
    assert all(isinstance(c, PipelineConfig) for c in sample_configs(space, 20, seed=0))


def test_the_cpu_space_of_the_pretrained_example_keeps_only_moderate_batches_and_single_views():
    example = Path(__file__).parents[1] / "examples/space-lite-cpu.yaml"
    configs = sample_configs(load_space(example, ["tf_efficientnet_lite0.in1k"]), 50, seed=1)
    assert {c.batch_size for c in configs} == {16, 32, 64}
    assert {c.warmup_epochs for c in configs} == {0} and {c.hvp_views for c in configs} == {1}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("learning_rate: [0.1]\n", "unknown hyperparameter 'learning_rate'.*did you mean 'lr'"),
        ("model: [resnet50.a1_in1k]\n", "unknown model 'resnet50.a1_in1k'.*dla46x_c.in1k"),
        ("opt: []\n", "opt: empty choice"),
        ("opt: [adamw, lamb]\n", "unsupported value.*'lamb'.*supported: sgd, momentum"),
        ("sched: None\n", "unsupported value.*'None'"),
        ("sp_reg: [-0.1]\n", "must be a finite number >= 0"),
        ("stoch_norm: sometimes\n", "expected true or false"),
        ("lr: [fast]\n", "lr: expected a number, got 'fast'"),
        ("batch_size: [12.5]\n", "must be an integer"),
        ("opt: adamw\nmomentum: [0.9]\n", "momentum is only used when opt is one of momentum"),
        ("opt: {add: [lamb]}\n", "only numeric hyperparameters take"),
        ("- lr\n", "must be a mapping"),
    ],
)
def test_space_file_errors(tmp_path, text, message):
    with pytest.raises(SpaceFileError, match=message):
        _space(tmp_path, text)


def test_space_file_strategies_and_missing(tmp_path):
    off = sample_configs(_space(tmp_path, "sp_reg: 0\nstoch_norm: false\n"), 20, seed=0)
    assert all(c.sp_reg == 0 and not c.stoch_norm for c in off)
    forced = sample_configs(_space(tmp_path, "stoch_norm: true\ncotuning_reg: [0, 4]\nbss_reg: 0.01\n"), 40, seed=0)
    assert all(c.stoch_norm and c.bss_reg == 0.01 for c in forced)
    assert {c.cotuning_reg for c in forced} == {0.0, 4.0}
    with pytest.raises(SpaceFileError, match="does not exist"):
        load_space(tmp_path / "nope.yaml", MODELS)


# --- encoding ------------------------------------------------------------------------------------------


def test_table_columns_are_the_table_header(table):
    assert tuple(table.columns) == TABLE_COLUMNS


def test_encoding_round_trips_the_table(table):
    rows = table.iloc[:250]
    configs = [decode(row) for _, row in rows.iterrows()]
    encoded = encode(configs)
    assert list(encoded.columns) == list(TABLE_COLUMNS)
    pd.testing.assert_frame_equal(encoded, rows.reset_index(drop=True), check_dtype=True)


def test_encode_sampled_configs_with_hub_names(samples):
    encoded = encode(samples[:40], ["tf_efficientnet_lite0.in1k"], model_names_map=TABLE_NAMES)
    extra = list(encoded.columns[len(TABLE_COLUMNS) :])
    assert extra == ["cat:model:tf_efficientnet_lite0.in1k", "cat:model:mobilevit_xxs.cvnets_in1k"]
    one_hot = encoded[[c for c in encoded.columns if c.startswith("cat:model:")]]
    assert (one_hot.sum(axis=1) == 1).all()
    # inactive values filled like the table
    sgd = encoded[encoded["cat:opt:sgd"] == 1]
    assert (sgd["momentum"] == 0.9).all() and (sgd["cat:opt_betas:None"] == 1).all()
    back = [decode(row, TABLE_NAMES) for _, row in encoded.iterrows()]
    assert back == [table_view(c) for c in samples[:40]]  # the training methods are not table columns


def test_training_methods_are_sampled_with_their_prior_and_uniformly_when_a_file_lists_them(tmp_path):
    """SPG/HVP are searchable but rarer by default (the meta-learned predictors cannot see them)."""
    import collections

    cs = sample_configs(build_space(["m"]), 2000, seed=1)
    spg = collections.Counter(c.spg for c in cs)
    views = collections.Counter(c.hvp_views for c in cs)
    assert 0.2 < spg[True] / 2000 < 0.3
    assert 0.65 < views[1] / 2000 < 0.75 and 0.15 < views[2] / 2000 < 0.25  # two views: the measured gain
    assert 0.02 < views[3] / 2000 < 0.08 and 0.02 < views[4] / 2000 < 0.08
    path = tmp_path / "space.yaml"
    path.write_text("spg: [false, true]\n")
    forced = collections.Counter(c.spg for c in sample_configs(load_space(path, ["m"]), 2000, seed=1))
    assert 0.45 < forced[True] / 2000 < 0.55
