"""The skeleton both loops share (bertlab.train.loop), on hand-made inputs: window means, the
non-finite stop's message, padded batches, the workdir's config check."""

import json
import math

import numpy as np
import pytest

from bertlab import workdir_lock
from bertlab.train import loop


def test_window_means_average_every_metric_but_keep_the_last_learning_rate():
    pending = [(1, {"loss": 1.0, "grad_norm": 4.0, "learning_rate": 0.1}),
               (2, {"loss": 2.0, "grad_norm": 2.0, "learning_rate": 0.2}),
               (3, {"loss": 6.0, "grad_norm": 0.0, "learning_rate": 0.3})]
    assert loop.window_means(pending) == {"loss": 3.0, "grad_norm": 2.0, "learning_rate": 0.3}


def test_metric_window_closes_with_means_then_stops_on_a_non_finite_loss():
    window = loop.MetricWindow(4, what="seed 7: ", advice="Lower optimizer.lr.")
    window.add(5, {"loss": np.float32(1.5), "learning_rate": np.float32(0.5)})
    window.add(6, {"loss": np.float32(2.5), "learning_rate": np.float32(0.25)})
    assert window.close("nothing is kept") == {"loss": 2.0, "learning_rate": 0.25}
    assert window.last_good_step == 6 and window.pending == []
    for step, loss in ((7, 1.0), (8, math.nan), (9, math.inf)):
        window.add(step, {"loss": loss, "learning_rate": 0.1})
    with pytest.raises(loop.NonFiniteLossError) as e:
        window.close("checkpoint 6 is kept")
    assert str(e.value) == ("seed 7: loss became nan within steps [7, 9] (first seen at step 8); "
                            "checkpoint 6 is kept. Lower optimizer.lr.")


def test_pad_rows_fills_with_row_zero_at_weight_zero():
    rows, weights = loop.pad_rows(np.array([3, 1]), 4)
    assert rows.tolist() == [3, 1, 0, 0] and weights.tolist() == [1.0, 1.0, 0.0, 0.0]
    assert weights.dtype == np.float32
    rows, weights = loop.pad_rows(np.array([2, 0, 1]), 3)
    assert rows.tolist() == [2, 0, 1] and weights.tolist() == [1.0, 1.0, 1.0]


def test_eval_batches_cover_every_row_once_in_order():
    values = np.arange(10, 15)  # N = 5 rows
    take = lambda rows: {"x": values[rows]}
    batches = list(loop.eval_batches(take, 5, 2))
    assert loop.eval_batch_count(5, 2) == 3 == len(batches)
    assert [b["x"].tolist() for b in batches] == [[10, 11], [12, 13], [14, 10]]
    assert [b["example_weights"].tolist() for b in batches] == [[1, 1], [1, 1], [1, 0]]
    assert loop.eval_batch_count(5, 2, max_batches=2) == 2
    assert len(list(loop.eval_batches(take, 5, 2, max_batches=2))) == 2
    # two processes: the second holds rows 2-3 of each global batch of 4
    second = list(loop.eval_batches(take, 5, 4, process_index=1, process_count=2))
    assert [b["x"].tolist() for b in second] == [[12, 13], [10, 10]]
    assert [b["example_weights"].tolist() for b in second] == [[1, 1], [0, 0]]


def test_first_difference_flattens_skips_free_keys_and_compares_as_json():
    saved = {"data": {"batch_size": 8, "seeds": [0, 1]}, "train": {"seed": 0, "log_every": 5}}
    current = {"data": {"batch_size": 8, "seeds": (0, 1)}, "train": {"seed": 3, "log_every": 9}}
    assert loop.first_difference(saved, current, free=("train.seed", "train.log_every")) is None
    assert loop.first_difference(saved, current) == ("train.log_every", 5, 9)
    assert loop.first_difference({"a": 1}, {"a": 1, "b": 2}) == ("b", "<absent>", 2)


def test_check_rerun_refuses_another_recipe_and_names_the_key(tmp_path):
    workdir = workdir_lock.ensure_directory(str(tmp_path / "run"))
    loop.check_rerun(workdir, {"optimizer": {"lr": 0.1}}, free=())  # no config.json yet
    loop.write_config(workdir, {"optimizer": {"lr": 0.1}, "train": {"seeds": (0,)}})
    assert json.load(open(f"{workdir}/config.json"))["train"]["seeds"] == [0]
    loop.check_rerun(workdir, {"optimizer": {"lr": 0.1}, "train": {"seeds": (0, 1)}},
                     free=("train.seeds",))
    with pytest.raises(loop.TrainConfigError, match=r"with optimizer.lr=0.1, now 0.2; use a new "
                                                    r"--workdir, or set optimizer.lr back"):
        loop.check_rerun(workdir, {"optimizer": {"lr": 0.2}, "train": {"seeds": (0,)}},
                         free=("train.seeds",))


def test_check_rerun_reads_a_key_added_later_as_what_older_runs_did(tmp_path):
    """A config.json written before data.packing existed stands for padded batches: adding
    seeds with packing off is accepted, with packing on refused naming the value to set."""
    workdir = workdir_lock.ensure_directory(str(tmp_path / "run"))
    loop.write_config(workdir, {"optimizer": {"lr": 0.1}})
    added = {"data.packing": False}
    loop.check_rerun(workdir, {"optimizer": {"lr": 0.1}, "data": {"packing": False}}, free=(),
                     added=added)
    with pytest.raises(loop.TrainConfigError, match=r"with data.packing=False, now True; use a "
                                                    r"new --workdir, or set data.packing back"):
        loop.check_rerun(workdir, {"optimizer": {"lr": 0.1}, "data": {"packing": True}},
                         free=(), added=added)
    with pytest.raises(loop.TrainConfigError, match=r"data.packing='<absent>', now True"):
        loop.check_rerun(workdir, {"optimizer": {"lr": 0.1}, "data": {"packing": True}},
                         free=())
