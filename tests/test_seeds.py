"""Several seeds: the spread over seeds (summary.json), the best seed, which seeds run again."""

import json
import os

import pytest

from bertlab.data.tasks.registry import TASKS
from bertlab.train import seeds


def test_spread_is_hand_computed():
    stats = seeds.spread([0.8, 0.9, 0.7, 0.85])
    assert stats["median"] == pytest.approx(0.825) and stats["mean"] == pytest.approx(0.8125)
    assert (stats["min"], stats["max"], stats["n"]) == (0.7, 0.9, 4)
    # squared deviations 0.00015625 + 0.00765625 + 0.01265625 + 0.00140625 = 0.021875; / (4 - 1)
    assert stats["std"] == pytest.approx((0.021875 / 3) ** 0.5)
    # one seed has no spread: None, as bertlab.lab.stats (study reports) gives it
    assert seeds.spread([0.5])["std"] is None


def test_summary_picks_the_best_seed_by_the_primary_metric():
    spec = TASKS["mrpc"]
    results = [{"seed": s, "eval": {"accuracy": a, "f1": f, "accuracy_f1_mean": (a + f) / 2},
                "test": None} for s, a, f in ((0, 0.80, 0.85), (1, 0.84, 0.83), (2, 0.70, 0.90))]
    summary = seeds.summarize(spec, results)
    assert summary["best_seed"] == 1  # 0.835 beats 0.825 and 0.80
    assert summary["eval"]["accuracy"]["median"] == pytest.approx(0.80)
    assert summary["eval"]["f1"]["max"] == pytest.approx(0.90)
    assert "test" not in summary


def test_finished_seeds_are_kept_and_unfinished_ones_restart(tmp_path, capsys):
    done = tmp_path / "seed_0"
    done.mkdir()
    (done / "result.json").write_text(json.dumps({"seed": 0, "eval": {"accuracy": 0.5}}))
    unfinished = tmp_path / "seed_1"
    unfinished.mkdir()
    (unfinished / "stale.txt").write_text("half a run")
    trained = []

    def train_seed(seed, directory):
        trained.append(seed)
        assert not os.path.exists(directory)  # a fresh directory for every seed that runs
        return {"seed": seed, "eval": {"accuracy": 0.75}}

    results = seeds.run_seeds((0, 1, 2), str(tmp_path), train_seed)
    assert trained == [1, 2]
    assert [r["eval"]["accuracy"] for r in results] == [0.5, 0.75, 0.75]
    out = capsys.readouterr().out
    assert "seed 0: finished earlier" in out and "seed 1: an unfinished run" in out


def test_seeds_of_one_seed_or_several():
    class Train(dict):
        __getattr__ = dict.__getitem__

    assert seeds.seeds_of(Train(seed=4, seeds=())) == (4,)
    assert seeds.seeds_of(Train(seed=0, seeds=(2, 5))) == (2, 5)
