"""The optimizers with steps in flight (asynchronous parallel search): nothing proposed twice, ASHA promotes as
rungs fill, Quick-Tune conditions on kriging-believer fantasies. No training: histories are built by hand."""

from __future__ import annotations

import numpy as np
from fake_surrogate import FakeSurrogate
from test_quicktune import quicktune, recorded, state

from qtt_cli.optimizer import RandomSearch, SuccessiveHalving
from qtt_cli.optimizer.base import RUNNING, Suggestion
from qtt_cli.optimizer.candidates import RecordedConfigs
from qtt_cli.optimizer.pending import kriging_believer, with_in_flight
from qtt_cli.space import build_space
from qtt_cli.space.config import PipelineConfig


def step(pid, start, end, config=None):
    return Suggestion(pid, config, start, end)


def test_a_pipeline_in_flight_is_marked_running_and_cannot_be_continued():
    history = {"a": state("a", [10.0])}
    seen = with_in_flight(history, {"a": step("a", 1, 2)})
    assert seen["a"].status == RUNNING and seen["a"].in_flight_to == 2 and not seen["a"].alive
    assert history["a"].status == "ok"  # the store's view is not touched


def test_random_search_never_proposes_a_pipeline_in_flight_and_new_ids_do_not_collide():
    space = build_space(["dla46x_c.in1k"])
    opt = RandomSearch(space, max_epochs=3, delta_t=1, seed=0)
    first = opt.ask({})
    second = opt.ask(with_in_flight({}, {first.pipeline_id: first}))
    assert second.pipeline_id != first.pipeline_id and second.start_epoch == 0
    assert second.config != first.config
    # p0001 has one epoch and is unfinished: sequential random search would continue it; in flight, it may not
    history = {"p0001": state("p0001", [10.0])}
    assert opt.ask(history).pipeline_id == "p0001"
    third = opt.ask(with_in_flight(history, {"p0001": step("p0001", 1, 2), "p0002": second}))
    assert third.pipeline_id == "p0003"


def test_asha_promotes_as_soon_as_a_rung_allows_and_never_twice():
    source = RecordedConfigs(tuple("abcdefgh"), (9,) * 8)
    asha = SuccessiveHalving(source, max_epochs=9, delta_t=1, eta=3, seed=0)  # rungs 1, 3, 9
    history = {pid: state(pid, [v]) for pid, v in zip("abcdef", (60, 50, 40, 30, 20, 10), strict=True)}
    # 6 reached rung 1: the top 2 (a, b) are promotable; a is already being promoted on another worker
    proposal = asha.ask(with_in_flight(history, {"a": step("a", 1, 2)}))
    assert (proposal.pipeline_id, proposal.start_epoch) == ("b", 1)
    # a and b both in flight: nobody else is in the top third, so a new configuration starts (no waiting)
    proposal = asha.ask(with_in_flight(history, {"a": step("a", 1, 2), "b": step("b", 1, 2)}))
    assert proposal.pipeline_id in set("gh") and proposal.start_epoch == 0
    # a new configuration in flight is not drawn again
    busy = {"a": step("a", 1, 2), "b": step("b", 1, 2), proposal.pipeline_id: proposal}
    again = asha.ask(with_in_flight(history, busy))
    assert again.pipeline_id in set("gh") - {proposal.pipeline_id}


def test_kriging_believer_appends_the_gp_mean_for_the_epochs_in_flight():
    curveset = recorded()
    history = {"a": state("a", [20.0]), "b": state("b", [30.0, 31.0])}
    observed = curveset.with_observations(
        [np.asarray(history[c].curve) if c in history else np.zeros(0) for c in curveset.config_ids],
        [np.asarray(history[c].costs) if c in history else np.zeros(0) for c in curveset.config_ids],
    )
    model = FakeSurrogate(means={"a": 55.0}, epoch_costs={"a": 2.0})
    believed = kriging_believer(model, observed, with_in_flight(history, {"a": step("a", 1, 3)}))
    row = curveset.config_ids.index("a")
    assert list(believed.curves[row]) == [20.0, 55.0, 55.0]
    assert list(believed.costs[row]) == [1.0, 2.0, 2.0]
    other = curveset.config_ids.index("b")
    assert list(believed.curves[other]) == [30.0, 31.0]  # not in flight: unchanged
    assert kriging_believer(model, observed, history) is observed  # nothing in flight: nothing believed


def test_quicktune_never_proposes_a_pipeline_in_flight_and_sees_its_fantasy():
    # d looks best, but it is in flight: the next best (e) is proposed; the fantasy of d (70 at epoch 2) is the
    # incumbent the candidates are measured against
    surrogate = FakeSurrogate(means={"d": 70, "e": 65}, default_mean=0, std=1.0)
    history = {"d": state("d", [50.0]), "e": state("e", [40.0])}
    opt = quicktune(surrogate)
    assert opt.ask(history).pipeline_id == "d"
    assert opt.ask(with_in_flight(history, {"d": step("d", 1, 2)})).pipeline_id == "e"


def test_quicktune_draws_distinct_fresh_configurations_while_the_first_ones_run():
    space = build_space(["dla46x_c.in1k"])
    from qtt_cli.optimizer import QuickTune

    opt = QuickTune.for_space(space, meta_features=[1000, 10, 128, 3], model_names_map=None,
                              model_column_names=None, max_epochs=3, delta_t=1, priors=FakeSurrogate(),
                              pool_size=8, seed=0)  # fmt: skip
    pending: dict[str, Suggestion] = {}
    for _ in range(3):
        s = opt.ask(with_in_flight({}, pending))
        assert isinstance(s.config, PipelineConfig) and s.pipeline_id not in pending
        pending[s.pipeline_id] = s
    assert len({s.config for s in pending.values()}) == 3


def test_the_parallel_replay_with_one_worker_is_the_sequential_replay():
    from qtt_cli.bench.parallel import replay_parallel
    from qtt_cli.bench.replay import recorded_configs, replay

    curveset = recorded()
    for make in (RandomSearch, SuccessiveHalving):
        one = replay(make(recorded_configs(curveset), max_epochs=4, delta_t=1, seed=0), curveset, 9.5)
        par = replay_parallel(make(recorded_configs(curveset), max_epochs=4, delta_t=1, seed=0), curveset, 9.5, 1)
        assert one.steps == par.steps and list(one.values) == list(par.values) and list(one.used_s) == list(par.used_s)


def test_the_parallel_replay_runs_steps_side_by_side_on_a_wall_clock():
    from qtt_cli.bench.parallel import replay_parallel
    from qtt_cli.bench.replay import recorded_configs

    curveset = recorded()  # every epoch costs 1 s
    opt = RandomSearch(recorded_configs(curveset), max_epochs=4, delta_t=1, seed=0)
    trace = replay_parallel(opt, curveset, 2.0, 3)  # 3 workers, 2 s: 3 pipelines x 2 epochs
    assert trace.steps == 6 and len(trace.values) == 6
    assert list(trace.used_s) == [1.0, 1.0, 1.0, 2.0, 2.0, 2.0]


def test_a_new_pipeline_never_takes_the_id_of_a_recorded_one():
    # two first steps in flight (p0001, p0002); the tuner is killed after p0002's epoch was recorded and before
    # p0001's: the rerun's store holds p0002 alone, and "pipeline count + 1" would be p0002 again
    space = build_space(["dla46x_c.in1k"])
    history = {"p0002": state("p0002", [10.0, 11.0, 12.0])}  # finished (max_epochs 3)
    for opt in (RandomSearch(space, max_epochs=3, delta_t=1, seed=0),
                SuccessiveHalving(space, max_epochs=3, delta_t=1, seed=0)):  # fmt: skip
        proposal = opt.ask(history)
        assert proposal.pipeline_id not in history and proposal.start_epoch == 0
