"""The pretraining loop's pace: the time budget (train.budget_minutes) with a fake clock, its
resume, the batch-size ramp (train.batch_ramp) with one compiled step, and evaluation at a fixed
masking rate (data.eval_mask_rate). Hand-computed values throughout (bertlab.train.budget)."""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bertlab.checkpoints import training_state as ckpt
from bertlab.config_cli import load_config_file
from bertlab.train import budget, pretrain, steps
from bertlab.train.metric_writer import read_metrics
from conftest import write_random_corpus

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORDS = ("the of and to in a is that for it as was with be by on not he this are or his from at "
         "which but have an they you were her she there had been one all we their has").split()

pytestmark = pytest.mark.usefixtures("module_compilation_cache")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return write_random_corpus(tmp_path_factory.mktemp("corpus") / "corpus.txt", WORDS, seed=1,
                               documents=40, sentences=(3, 8), words_per_sentence=(5, 20))


def quick_config(corpus, **overrides):
    config = load_config_file(os.path.join(REPO, "configs/pretrain.py:quick"))
    config.data.corpus = corpus
    config.train.log_every = 1
    config.train.eval_every = 0
    config.train.eval_batches = 0
    for key, value in overrides.items():
        group, name = key.split("__")
        config[group][name] = value
    return config


@pytest.fixture
def fake_clock(monkeypatch):
    """Each reading is 1.5 s after the previous one."""
    state = {"t": 0.0}

    def now():
        state["t"] += 1.5
        return state["t"]

    monkeypatch.setattr(budget, "now", now)
    return state


def train_lines(workdir):
    return read_metrics(os.path.join(workdir, "metrics.jsonl"))["train"]


# ------------------------------------------------------------------------------ units

def test_clock_counts_steps_but_not_the_first_nor_restarts():
    times = iter([10.0, 12.0, 15.0, 40.0, 41.0])
    clock = budget.TrainingClock(100.0, clock=lambda: next(times))
    clock.tick()          # 10: the compiling step, not counted
    clock.tick()          # 12: +2
    clock.tick()          # 15: +3
    clock.restart()       # 40: an evaluation from 15 to 40, left out
    clock.tick()          # 41: +1
    assert clock.elapsed == 106.0


def test_micro_batches_grow_linearly_to_the_whole_batch():
    # K = 4 over half of training: 1 + floor(3 * f / 0.5)
    got = [budget.micro_batches_at(f, 0.5, 4) for f in (0, 0.1, 1 / 6, 0.2, 1 / 3, 0.49, 0.5, 0.9)]
    assert got == [1, 1, 2, 2, 3, 3, 4, 4]
    assert budget.micro_batches_at(0.0, 0.0, 4) == 4      # no ramp
    assert budget.micro_batches_at(0.3, 0.5, 1) == 1


def test_ramp_batch_lays_micro_batches_out_as_the_step_splits_them():
    micro = [{"x": np.array([[10], [11]])}, {"x": np.array([[20], [21]])}]
    batch = budget.ramp_batch(micro, 3)
    # row j * 3 + i is row j of micro-batch i; micro-batch 2 copies micro-batch 0, weight 0
    assert batch["x"][:, 0].tolist() == [10, 20, 10, 11, 21, 11]
    assert batch["example_weights"].tolist() == [1, 1, 0, 1, 1, 0]
    split = batch["x"].reshape(2, 3, 1).swapaxes(0, 1)     # the step's (k, B/k, ...) split
    assert split[0, :, 0].tolist() == [10, 11] and split[1, :, 0].tolist() == [20, 21]


def test_an_empty_micro_batch_changes_nothing(corpus, tmp_path):
    """Whatever an all-zero-weight micro-batch holds, the update is the same: it is skipped."""
    from bertlab.models import BertForPreTraining
    from bertlab.models.config import BertConfig
    from bertlab.text.tokenizer import vocab_from_tokens
    from bertlab.train import optimizer as optimizer_lib
    from bertlab.train import state as train_state

    vocab = vocab_from_tokens(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + WORDS)
    model = BertForPreTraining(BertConfig(vocab_size=len(vocab), hidden_size=16, num_layers=1,
                                          num_heads=2, intermediate_size=32,
                                          max_position_embeddings=16), with_nsp=False)
    tx, schedule = optimizer_lib.make_optimizer("adamw", lr=1e-2, warmup_steps=0, num_steps=10,
                                                weight_decay=0.0, b1=0.9, b2=0.999, eps=1e-6,
                                                clip_norm=0.0)
    from bertlab.train import mesh as mesh_lib

    mesh = mesh_lib.data_mesh()
    params = train_state.init_params(model, jax.random.PRNGKey(0), seq_len=8, num_predictions=3,
                                     mesh=mesh)
    rng = np.random.default_rng(0)

    def micro():
        return {"token_ids": np.concatenate([np.full((2, 1), 2), rng.integers(5, len(vocab), (2, 6)),
                                             np.full((2, 1), 3)], 1).astype(np.int32),
                "segment_ids": np.zeros((2, 8), np.int32),
                "attention_mask": np.ones((2, 8), np.int32), "nsp_labels": np.zeros(2, np.int32)}

    real = micro()
    mask_fn = steps.make_mask_fn(vocab, rate=0.3, max_predictions=3, whole_word=False)
    step = jax.jit(lambda s, b: steps.train_step(
        s, b, jax.random.PRNGKey(1), mask_fn=mask_fn, schedule=schedule, grad_accum_steps=2,
        with_nsp=False, skip_empty_micro_batches=True))
    outs = []
    for other in (real, micro()):  # the inactive micro-batch: a copy, or other text
        batch = budget.ramp_batch([real], 2)
        garbage = budget.ramp_batch([real, other], 2)
        batch = {**garbage, "example_weights": batch["example_weights"]}
        state = train_state.create_train_state(model, tx, jax.tree_util.tree_map(jnp.copy, params),
                                               mesh=mesh)
        outs.append(step(state, batch))
    (a, ma), (b, mb) = outs
    assert float(ma["loss"]) == float(mb["loss"]) and float(ma["mlm_loss"]) > 0
    for x, y in zip(jax.tree_util.tree_leaves(a.params), jax.tree_util.tree_leaves(b.params)):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_evaluation_masks_at_its_own_rate(corpus):
    """data.eval_mask_rate: the eval step's mask count per sequence is round(0.15 x real
    tokens), whatever data.mask_rate (0.4 here), capped at max_predictions."""
    from bertlab.data.pretraining.masking import num_predictions_table
    from bertlab.text.tokenizer import vocab_from_tokens

    vocab = vocab_from_tokens(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + WORDS)
    lengths = np.array([32, 20, 7])  # real tokens per row
    ids = np.full((3, 32), 0, np.int32)
    for row, n in enumerate(lengths):
        ids[row, :n] = [2] + [5 + (i % 30) for i in range(n - 2)] + [3]
    mask = (ids > 0).astype(np.int32)
    for rate, expected in ((0.15, [5, 3, 1]), (0.4, [13, 8, 3])):
        fn = steps.make_mask_fn(vocab, rate=rate, max_predictions=13, whole_word=False)
        out = fn(jax.random.PRNGKey(0), jnp.asarray(ids), jnp.asarray(mask))
        # round(0.15 * 32) = 5, round(0.15 * 20) = 3, round(0.15 * 7) = 1 (1.05);
        # 0.4: 12.8 -> 13, 8, 2.8 -> 3
        assert np.asarray(out["masked_weights"]).sum(1).tolist() == expected
        assert num_predictions_table(32, rate, 13)[lengths].tolist() == expected


# ------------------------------------------------------------------------------ the loop

def test_eval_mask_rate_reaches_the_evaluation(corpus, tmp_path):
    """The masked tokens an evaluation scores follow data.eval_mask_rate, not data.mask_rate."""
    counts = {}
    for rate in (0.0, 0.15):
        config = quick_config(corpus, data__mask_rate=0.4, data__max_predictions=13,
                              data__eval_mask_rate=rate, train__num_steps=1,
                              optimizer__warmup_steps=0,
                              train__eval_batches=2)
        final = pretrain.train_and_evaluate(config, str(tmp_path / f"eval{rate}"))
        counts[rate] = final["eval_masked_tokens"]
    from bertlab.data.pretraining.masking import num_predictions_table
    from bertlab.data.pretraining.shards import ShardedExamples

    examples = ShardedExamples.open(str(tmp_path / "eval0.0" / "data" / "eval"))
    rows = min(len(examples), 2 * 8)
    lengths = examples.take(np.arange(rows))["attention_mask"].sum(1)
    for rate, key in ((0.4, 0.0), (0.15, 0.15)):
        assert counts[key] == num_predictions_table(32, rate, 13)[lengths].sum()


def test_time_budget_drives_the_rate_and_the_end(corpus, tmp_path, fake_clock, monkeypatch):
    """Budget 0.1 min = 6 s, 1.5 s per timed step, the first step (compiling) untimed: the
    progress fed to step k is 1.5 (k - 2) / 6 (0 for k = 1), and step 5 spends the budget.
    adamw's triangle over the budget, warm-up half of it, peak 1e-3:
    steps 1..5 -> progress 0, 0, .25, .5, .75 -> lr 0, 0, 5e-4, 1e-3, 5e-4."""
    compiled = capture_train_steps(monkeypatch)
    # padded: packed batches compile one program per planned row count, and this test counts
    # the programs the budget's progress would add (none)
    config = quick_config(corpus, train__budget_minutes=0.1, train__num_steps=100,
                          optimizer__name="adamw", optimizer__lr=1e-3,
                          optimizer__warmup_fraction=0.5, data__packing=False)
    final = pretrain.train_and_evaluate(config, str(tmp_path / "run"))
    assert final["step"] == 5
    lrs = [line["learning_rate"] for line in sorted(train_lines(tmp_path / "run").values(),
                                                     key=lambda line: line["step"])]
    np.testing.assert_allclose(lrs, [0, 0, 5e-4, 1e-3, 5e-4], atol=1e-9)
    manager = ckpt.open_manager(str(tmp_path / "run"), keep=3)
    assert ckpt.read_meta(manager, 5)[budget.ELAPSED_KEY] == 6.0
    manager.close()
    assert [f._cache_size() for f in compiled] == [1]
    # a rerun finds the budget spent: nothing more is trained
    assert pretrain.train_and_evaluate(config, str(tmp_path / "run"))["step"] == 5


def test_a_resumed_run_continues_the_budget(corpus, tmp_path, fake_clock):
    """Stopped after step 3 (4.5 s... 3.0 s timed: steps 2 and 3), the rerun starts from 3.0 s:
    its first step compiles (untimed, fed 0.5), then 0.5, 0.75 and the budget is spent after
    step 6, the step that brings it to 6 s."""
    config = quick_config(corpus, train__budget_minutes=0.1, train__num_steps=100,
                          optimizer__name="adamw", optimizer__lr=1e-3,
                          optimizer__warmup_fraction=0.5, train__stop_after=3)
    workdir = str(tmp_path / "run")
    assert pretrain.train_and_evaluate(config, workdir)["step"] == 3
    manager = ckpt.open_manager(workdir, keep=3)
    assert ckpt.read_meta(manager, 3)[budget.ELAPSED_KEY] == 3.0
    manager.close()
    config.train.stop_after = 0
    final = pretrain.train_and_evaluate(config, workdir)
    assert final["step"] == 6
    lines = train_lines(workdir)
    np.testing.assert_allclose([lines[s]["learning_rate"] for s in (4, 5, 6)],
                               [1e-3, 1e-3, 5e-4], atol=1e-9)
    np.testing.assert_allclose([lines[s]["train_seconds"] for s in (4, 5, 6)], [3.0, 4.5, 6.0])


def test_cpu_budget_clock_reads_process_cpu_time(monkeypatch):
    """budget_clock="cpu" reads time.process_time: a sleep spends no budget, work does; the
    wall clock sees both."""
    import time

    from ml_collections import ConfigDict
    train = ConfigDict({"budget_minutes": 1.0, "batch_ramp": 0.0, "num_steps": 10,
                        "budget_clock": "cpu"})
    cpu, wall = budget.Pace(train, 1), budget.Pace(ConfigDict({**train, "budget_clock": "wall"}), 1)
    for pace in (cpu, wall):
        pace.clock.restart()
    time.sleep(0.3)
    for pace in (cpu, wall):
        pace.clock.tick()
    assert cpu.clock.elapsed < 0.05 and wall.clock.elapsed >= 0.3
    readings = iter([5.0, 7.5])
    monkeypatch.setattr(budget, "cpu_now", lambda: next(readings))
    pace = budget.Pace(train, 1, elapsed=30.0)
    pace.clock.tick()
    pace.clock.tick()
    assert pace.clock.elapsed == 32.5 and pace.fraction(0) == 32.5 / 60.0


def capture_train_steps(monkeypatch):
    compiled = []
    original = steps.jit_train_step

    def capture(**kwargs):
        fn = original(**kwargs)
        compiled.append(fn)
        return fn

    monkeypatch.setattr(pretrain.steps, "jit_train_step", capture)
    return compiled


def test_batch_ramp_grows_the_update_with_one_compiled_step(corpus, tmp_path, monkeypatch):
    """batch 8 in 4 micro-batches of 2, ramped over half of 8 steps: the update of step s (after
    s - 1 done) has 1 + floor(3 (s - 1) / 8 / 0.5) micro-batches = 1, 1, 2, 3, 4, 4, 4, 4; the
    data advances by 2 examples per micro-batch (46 after 8 steps); one compiled train step."""
    compiled = capture_train_steps(monkeypatch)
    config = quick_config(corpus, optimizer__grad_accum_steps=4, train__batch_ramp=0.5,
                          train__num_steps=8)
    workdir = str(tmp_path / "ramp")
    final = pretrain.train_and_evaluate(config, workdir)
    assert final["step"] == 8
    lines = train_lines(workdir)
    assert [lines[s]["micro_batches"] for s in range(1, 9)] == [1, 1, 2, 3, 4, 4, 4, 4]
    manager = ckpt.open_manager(workdir, keep=3)
    data = ckpt.read_meta(manager, 8)["data"]
    manager.close()
    assert (data["epoch"], data["position"]) == (0, 2 * 23)
    assert [f._cache_size() for f in compiled] == [1]
    assert all(np.isfinite(lines[s]["loss"]) for s in range(1, 9))


def test_pace_keys_are_checked(corpus, tmp_path):
    from bertlab.train.loop import TrainConfigError

    for overrides, message in (
            ({"train__batch_ramp": 0.5}, "optimizer.grad_accum_steps >= 2"),
            ({"train__budget_minutes": -1.0}, "train.budget_minutes=-1.0"),
            ({"optimizer__warmup_from": 0.25}, "set train.budget_minutes"),
            ({"data__eval_mask_rate": 0.5}, "exceeds data.max_predictions"),
            ({"train__budget_clock": "gpu"}, "train.budget_clock='gpu' must be one of wall, cpu")):
        with pytest.raises(TrainConfigError, match=message.replace(".", r"\.")):
            pretrain.check_config(quick_config(corpus, **overrides))


def test_budget_warm_up_defaults_to_the_recipes_share(corpus):
    """Without optimizer.warmup_fraction a budget warms up for warmup_steps / num_steps of it:
    the bert recipe's 10k of 1M steps is 1 % of the time; a share >= 1 is refused."""
    from bertlab.train.loop import TrainConfigError

    config = load_config_file(os.path.join(REPO, "configs/pretrain.py:tiny,minutes=5"))
    assert pretrain.budget_warmup(config.optimizer, config.train.num_steps) == 0.01
    _, schedule = pretrain.make_optimizer(config)
    np.testing.assert_allclose([float(schedule(p)) for p in (0.005, 0.01, 0.5)],
                               [0.5e-4, 0.99e-4, 0.5e-4], rtol=1e-5)   # bert: 1 - p after W
    config.optimizer.warmup_steps = config.train.num_steps
    with pytest.raises(TrainConfigError, match="warm-up's share of the time budget"):
        pretrain.check_config(config)
