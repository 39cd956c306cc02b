"""`bertlab pretrain` end to end on a small temp corpus, with the `quick` config.

One straight 20-step run through the CLI is the reference; the other tests resume, interrupt,
diverge or misconfigure against it. Compiled programs are shared through a persistent
compilation cache scoped to this module, so a resumed run does not compile again.
"""

import json
import os
import random
import shutil
import signal
import subprocess
import sys

import jax
import numpy as np
import pytest

from bertlab import cli
from bertlab.checkpoints import init_from
from bertlab.train import pretrain
from bertlab.checkpoints import training_state as ckpt
from bertlab.train.metric_writer import MetricWriter, read_metrics
from conftest import prepared_overrides, write_random_corpus

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

CONFIG = "configs/pretrain.py:quick"
WORDS = ("the of and to in a is that for it as was with be by on not he this are or his from at "
         "which but have an they you were her she there had been one all we their has would when "
         "if so no").split()
LOSS_KEYS = ("loss", "mlm_loss", "mlm_accuracy", "grad_norm", "learning_rate")


pytestmark = pytest.mark.usefixtures("module_compilation_cache")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """40 documents of random sentences over 47 words: deterministic, ~90 examples of 32 tokens."""
    return write_random_corpus(tmp_path_factory.mktemp("corpus") / "corpus.txt", WORDS, seed=0,
                               documents=40, sentences=(3, 8), words_per_sentence=(5, 20),
                               capitalize=True)


def run_cli(workdir, *overrides):
    return cli.main(["pretrain", "--config", CONFIG, "--workdir", str(workdir), *overrides])


@pytest.fixture(scope="module")
def straight(tmp_path_factory, corpus):
    """The reference: 20 steps through the CLI, learning a vocabulary and creating the shards."""
    workdir = tmp_path_factory.mktemp("straight")
    assert run_cli(workdir, f"--config.data.corpus={corpus}") == 0
    return workdir


def train_lines(workdir):
    return read_metrics(os.path.join(workdir, "metrics.jsonl"))


def test_run_writes_the_workdir(straight):
    for name in ("config.json", "metrics.jsonl", "loss.png", "vocab.txt", "final_metrics.json",
                 "data/meta.json"):
        assert (straight / name).exists(), name
    assert (straight / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert any(name.startswith("events") for name in os.listdir(straight / "tensorboard"))
    config = json.loads((straight / "config.json").read_text())
    assert config["model"]["hidden_size"] == 32 and config["train"]["num_steps"] == 20
    # quick: checkpoints every 10 steps, the last 2 kept
    assert sorted(int(d) for d in os.listdir(straight / "checkpoints") if d.isdigit()) == [10, 20]

    metrics = train_lines(straight)
    assert sorted(metrics["train"]) == [5, 10, 15, 20]
    assert sorted(metrics["eval"]) == [10, 20]
    for record in metrics["train"].values():
        assert record["tokens_per_second"] > 0 and 0 < record["mfu"] < 1
        assert record["nsp_loss"] == 0.0  # quick has no next-sentence task
    first, last = metrics["train"][5], metrics["train"][20]
    assert last["loss"] < first["loss"]  # it learns something in 20 steps
    evaluation = metrics["eval"][20]
    assert evaluation["perplexity"] == pytest.approx(np.exp(evaluation["mlm_loss"]), rel=1e-5)
    final = json.loads((straight / "final_metrics.json").read_text())
    assert final["step"] == 20 and final["eval_mlm_loss"] == evaluation["mlm_loss"]


def test_load_pretrained_workdir(straight):
    config, params, vocab_path = init_from.load_pretrained_workdir(str(straight))
    assert (config.hidden_size, config.num_layers, config.num_heads) == (32, 2, 2)
    assert vocab_path == str(straight / "vocab.txt")
    with open(vocab_path) as f:
        assert config.vocab_size == sum(1 for _ in f)
    assert params["bert"]["embeddings"]["word_embeddings"]["embedding"].shape == (config.vocab_size, 32)


class SigtermAt(MetricWriter):
    """Delivers a real SIGTERM to this process when the loop reaches `STEP`."""
    STEP = None

    def progress(self, step, **postfix):
        super().progress(step, **postfix)
        if step == self.STEP and not postfix:
            os.kill(os.getpid(), signal.SIGTERM)


def test_resume_is_exact(straight, tmp_path, monkeypatch):
    """20 straight == 10 (stop_after) + 5 (SIGTERM) + 5: same losses and params, bit for bit."""
    workdir = tmp_path / "resumed"
    args = prepared_overrides(straight)
    sigterm_before = signal.getsignal(signal.SIGTERM)  # not always SIG_DFL (nohup, CI runners)
    assert run_cli(workdir, *args, "--config.train.stop_after=10") == 0
    assert ckpt.restore_params(str(workdir))[1]["step"] == 10
    # a deliberate stop_after is a finished stage (its final metrics say so) ...
    assert json.loads((workdir / "final_metrics.json").read_text())["stopped_by"] == \
        "train.stop_after=10"

    monkeypatch.setattr(SigtermAt, "STEP", 15)
    monkeypatch.setattr(pretrain, "MetricWriter", SigtermAt)
    assert run_cli(workdir, *args) == 0  # SIGTERM: finish the step, save, exit cleanly
    params15, meta15 = ckpt.restore_params(str(workdir))
    assert meta15["step"] == 15
    assert signal.getsignal(signal.SIGTERM) is sigterm_before  # handlers are given back
    # ... a preemption is not: no final metrics (the step-10 ones went when training went on),
    # so a sweep sees the stage unfinished and reruns it
    assert not (workdir / "final_metrics.json").exists()
    monkeypatch.undo()

    assert run_cli(workdir, *args) == 0
    ours, reference = train_lines(workdir), train_lines(straight)
    assert sorted(ours["train"]) == [5, 10, 15, 20]
    for step in (5, 10, 15, 20):
        for key in LOSS_KEYS:
            assert ours["train"][step][key] == reference["train"][step][key], (step, key)
    assert ours["eval"][20]["mlm_loss"] == reference["eval"][20]["mlm_loss"]
    got, _ = ckpt.restore_params(str(workdir))
    want, meta = ckpt.restore_params(str(straight))
    assert meta["data"] == ckpt.restore_params(str(workdir))[1]["data"]  # same data position
    for a, b in zip(jax.tree_util.tree_leaves(got), jax.tree_util.tree_leaves(want)):
        np.testing.assert_array_equal(a, b)


def test_incompatible_resume_fails_and_keeps_everything(straight, tmp_path, capsys):
    workdir = tmp_path / "copy"
    shutil.copytree(straight, workdir)
    before = {name: (workdir / name).read_bytes() for name in ("config.json", "metrics.jsonl")}
    steps_before = sorted(os.listdir(workdir / "checkpoints"))
    capsys.readouterr()
    assert run_cli(workdir, "--config.model.hidden_size=64",
                   f"--config.data.corpus={json.loads(before['config.json'])['data']['corpus']}") == 2
    err = capsys.readouterr().err.strip()
    assert "incompatible" in err and "model.hidden_size was 32, now 64" in err
    assert len(err.splitlines()) == 1
    assert {name: (workdir / name).read_bytes() for name in before} == before
    assert sorted(os.listdir(workdir / "checkpoints")) == steps_before


def test_eight_devices_give_the_same_losses(straight, tmp_path):
    """Data parallelism over 8 forced CPU devices reproduces the 1-device run (~1e-5)."""
    workdir = tmp_path / "eight"
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8",
               JAX_PLATFORMS="cpu")
    probe = "import jax, sys; sys.exit(0 if jax.device_count() == 8 else 3)"
    result = subprocess.run([sys.executable, "-c", probe], env=env, cwd=REPO)
    assert result.returncode == 0, "XLA_FLAGS did not give 8 CPU devices"
    result = subprocess.run([sys.executable, "-m", "bertlab", "pretrain", "--config", CONFIG,
                             "--workdir", str(workdir), *prepared_overrides(straight),
                             "--config.train.peak_flops=1e11", "--config.train.eval_batches=0"],
                            env=env, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "8 device(s)" in result.stdout
    ours, reference = train_lines(workdir), train_lines(straight)
    for step in (5, 10, 15, 20):
        for key in ("loss", "mlm_accuracy", "grad_norm"):
            assert ours["train"][step][key] == pytest.approx(reference["train"][step][key],
                                                             rel=1e-5, abs=1e-6), (step, key)
    assert "eval" not in ours  # evaluation is off here: one compilation less


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(straight, tmp_path, capsys,
                                                                   monkeypatch):
    """A NaN injected into the step's loss from step 3 on (the compiled step is reused, so this
    costs no compilation): the run stops at the next check and keeps checkpoint 2."""
    real_jit_train_step = pretrain.steps.jit_train_step
    sigint_before = signal.getsignal(signal.SIGINT)  # SIG_IGN under nohup or a background job

    def poisoned_jit_train_step(**kwargs):
        step_fn = real_jit_train_step(**kwargs)

        def poisoned(state, batch, rng):
            state, metrics = step_fn(state, batch, rng)
            return state, dict(metrics, loss=jax.numpy.where(state.step > 2, jax.numpy.nan,
                                                             metrics["loss"]))
        return poisoned

    monkeypatch.setattr(pretrain.steps, "jit_train_step", poisoned_jit_train_step)
    workdir = tmp_path / "diverged"
    code = run_cli(workdir, *prepared_overrides(straight), "--config.train.log_every=2",
                   "--config.train.checkpoint_every=2", "--config.train.eval_every=0")
    assert code == 1
    err = capsys.readouterr().err
    assert "loss became nan within steps [3, 4] (first seen at step 3)" in err
    assert "the last good checkpoint (step 2) is kept" in err
    assert sorted(os.listdir(workdir / "checkpoints")) == ["2"]
    assert signal.getsignal(signal.SIGINT) is sigint_before  # handlers given back


@pytest.mark.parametrize("override, message", [
    ("--config.optimizer.lrr=1e-3", "unknown config key 'optimizer.lrr' (did you mean 'optimizer.lr'?)"),
    ("--config.train.num_steps=ten", "wrong type for config key 'train.num_steps'"),
    ("--config.data.max_seq_length=1000", "data.max_seq_length=1000 exceeds model.max_position_embeddings=64"),
    ("--config.data.corpus=/nonexistent/corpus.txt", "data.corpus='/nonexistent/corpus.txt': /nonexistent/corpus.txt: corpus file not found"),
])
def test_bad_config_is_one_line_and_exit_2(tmp_path, capsys, override, message):
    assert run_cli(tmp_path / "w", override) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1, err


def test_empty_corpus_is_refused(tmp_path, capsys):
    empty = tmp_path / "empty.txt"
    empty.write_text("\n\n")
    assert run_cli(tmp_path / "w", f"--config.data.corpus={empty}") == 2
    assert "no words to learn from" in capsys.readouterr().err


def test_help_lists_the_config_keys(capsys):
    assert cli.main(["pretrain", "--config", CONFIG, "--help"]) == 0
    out = capsys.readouterr().out
    assert "usage: bertlab pretrain" in out
    assert "--config.optimizer.lr=0.001" in out and "--config.model.num_layers=2" in out


@pytest.mark.parametrize("variant", ["tiny", "base", "quick", "demo"])
def test_config_exposes_every_model_knob(variant):
    from bertlab.config_cli import load_config_file
    from bertlab.models.config import CONFIG_FIELDS
    from bertlab.train.model_config import model_config_from

    config = load_config_file(os.path.join(REPO, f"configs/pretrain.py:{variant}"))
    assert set(config.model) - {"variant"} == set(CONFIG_FIELDS) - {"vocab_size"}
    model = model_config_from(config.model, vocab_size=100)
    assert model.vocab_size == 100
    if variant == "base":
        assert (model.num_layers, model.hidden_size, model.num_heads) == (12, 768, 12)


def test_eval_corpus_is_scored_instead_of_a_held_out_share(straight, tmp_path, capsys):
    """data.eval_corpus: the evaluation reads every document of that file (shards made like the
    training ones), and the masked tokens it scored are exactly those of its examples."""
    from bertlab.data.pretraining.masking import num_predictions_table
    from bertlab.data.pretraining.shards import ShardedExamples
    from bertlab.text.tokenizer import load_vocab

    rng = random.Random(1)
    held_out = tmp_path / "test_set.txt"
    held_out.write_text("\n".join(
        "\n".join(" ".join(rng.choice(WORDS) for _ in range(9)) + "." for _ in range(2)) + "\n"
        for _ in range(3)))
    workdir = tmp_path / "w"
    assert run_cli(workdir, *prepared_overrides(straight), f"--config.data.eval_corpus={held_out}",
                   "--config.train.num_steps=4", "--config.train.eval_every=0") == 0
    meta = json.loads((workdir / "eval_data" / "meta.json").read_text())
    assert meta["counts"]["eval_documents"] == 3 and meta["counts"]["train_documents"] == 0
    assert meta["args"]["eval_fraction"] == 1.0 and meta["args"]["files"] == [str(held_out)]

    vocab = load_vocab(str(straight / "vocab.txt"))
    examples = ShardedExamples.open(str(workdir / "eval_data" / "eval"))
    batch = examples.take(np.arange(len(examples)))
    real = (batch["attention_mask"] == 1) & ~np.isin(batch["token_ids"], list(vocab.special_ids))
    table = num_predictions_table(32, 0.15, 5)            # quick: T=32, rate 0.15, P=5
    expected = int(sum(table[n] for n in real.sum(axis=1)))
    final = json.loads((workdir / "final_metrics.json").read_text())
    assert len(examples) <= 16                             # all fit the 2 eval batches of 8
    assert final["eval_masked_tokens"] == expected > 0

    # another eval corpus on the next start is refused, naming the key; nothing is deleted
    other = tmp_path / "other.txt"
    other.write_text(held_out.read_text())
    assert run_cli(workdir, *prepared_overrides(straight), f"--config.data.eval_corpus={other}",
                   "--config.train.num_steps=4") == 2
    assert "data.eval_corpus names other files than" in capsys.readouterr().err
    assert (workdir / "eval_data" / "meta.json").exists()


def test_eval_corpus_with_device_tokenisation_is_refused(tmp_path, capsys):
    assert run_cli(tmp_path / "w", "--config.data.eval_corpus=x.txt",
                   "--config.data.tokenize_on_device=True") == 2
    assert "data.eval_corpus works with host tokenisation only" in capsys.readouterr().err


def test_what_each_step_is_due_for():
    """(finished, stopping, log, evaluate, save) by hand for num_steps 10, log every 5, no
    periodic evaluation, a checkpoint every 4."""
    from types import SimpleNamespace

    train = SimpleNamespace(num_steps=10, stop_after=0, log_every=5, eval_every=0,
                            checkpoint_every=4)
    due = lambda step, signalled=False, can_evaluate=True: pretrain.due(
        step, train, signalled=signalled, can_evaluate=can_evaluate)
    assert due(4) == (False, False, False, False, True)
    assert due(5) == (False, False, True, False, False)
    assert due(3, signalled=True) == (False, True, False, False, True)
    assert due(10) == (True, False, True, True, True)
    assert due(10, can_evaluate=False) == (True, False, True, False, True)
    train.stop_after = 7
    assert due(7) == (False, True, False, False, True)


def test_a_checkpoint_older_than_a_model_knob_resumes_with_its_default():
    saved = {"model.hidden_size": 32, "optimizer.name": "adamw"}  # written before `norm` existed
    current = {**saved, "model.norm": "layernorm"}
    assert pretrain.compat_difference(saved, current) is None
    assert pretrain.compat_difference(saved, {**current, "model.norm": "rmsnorm"}) == (
        "model.norm", "layernorm", "rmsnorm")
    assert pretrain.compat_difference(saved, {**current, "model.hidden_size": 64}) == (
        "model.hidden_size", 32, 64)
    assert pretrain.compat_difference({**saved, "vocab_sha256": "a"}, current) == (
        "vocab_sha256", "a", "<absent>")


def test_a_finished_rerun_writes_nothing(straight, tmp_path, capsys):
    """Rerunning a finished run returns its final metrics: no second eval line, no second
    TensorBoard events file, the config files as they were."""
    workdir = tmp_path / "finished"
    shutil.copytree(straight, workdir)
    names = ("metrics.jsonl", "final_metrics.json", "config.json")
    before = {name: (workdir / name).read_bytes() for name in names}
    events = sorted(os.listdir(workdir / "tensorboard"))
    corpus = json.loads(before["config.json"])["data"]["corpus"]
    capsys.readouterr()
    assert run_cli(workdir, f"--config.data.corpus={corpus}") == 0
    assert "is already trained to step 20" in capsys.readouterr().out
    assert {name: (workdir / name).read_bytes() for name in names} == before
    assert sorted(os.listdir(workdir / "tensorboard")) == events
    assert not (workdir / "config.pending.json").exists()


def test_peak_flops_is_recorded_in_the_metrics(straight):
    final = json.loads((straight / "final_metrics.json").read_text())
    assert final["peak_flops"] > 0 and final["peak_flops_source"] == "measured"  # cache off here
    first, *rest = [train_lines(straight)["train"][step] for step in (5, 10, 15, 20)]
    assert first["peak_flops"] == final["peak_flops"]  # what this start's MFU divides by
    assert not any("peak_flops" in record for record in rest)


def test_another_num_steps_on_resume_is_refused_unless_extend(straight, tmp_path, capsys):
    """A resume with train.num_steps=30 would reshape the learning-rate schedule of a 20-step run:
    refused, naming both; --config.train.extend=True trains on, the old config kept beside."""
    workdir = tmp_path / "extend"
    args = prepared_overrides(straight)
    assert run_cli(workdir, *args, "--config.train.stop_after=10") == 0
    before = (workdir / "config.json").read_bytes()
    capsys.readouterr()
    assert run_cli(workdir, *args, "--config.train.num_steps=30") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "train.num_steps=30, but the checkpoints in" in err[0]
    assert "trained for train.num_steps=20" in err[0] and "--config.train.extend=True" in err[0]
    assert (workdir / "config.json").read_bytes() == before
    assert run_cli(workdir, *args, "--config.train.num_steps=12", "--config.train.extend=True",
                   "--config.train.eval_batches=0") == 0
    assert json.loads((workdir / "config.json").read_text())["train"]["num_steps"] == 12
    assert json.loads((workdir / "config.previous.json").read_text())["train"]["num_steps"] == 20
    assert json.loads((workdir / "final_metrics.json").read_text())["step"] == 12
    # the earlier stop's results are kept beside, not deleted
    assert json.loads((workdir / "final_metrics.previous.json").read_text())["step"] == 10


def test_init_from_records_the_step_and_falls_back_past_a_damaged_checkpoint(straight, tmp_path,
                                                                             capsys):
    backbone = init_from.resolve_backbone(str(straight))
    assert backbone.provenance["step"] == 20 and backbone.provenance["kind"] == "pretrain"
    assert backbone.provenance["sha256"] == init_from.params_sha256(backbone.params)
    workdir = tmp_path / "damaged"
    shutil.copytree(straight, workdir)
    data = sorted((workdir / "checkpoints" / "20" / "params" / "ocdbt.process_0" / "d").iterdir(),
                  key=lambda p: p.stat().st_size)[-1]
    with open(data, "r+b") as f:
        f.truncate(100)
    fallback = init_from.resolve_backbone(str(workdir))
    assert fallback.provenance["step"] == 10  # checkpoint 20 moved aside, 10 read
    assert fallback.provenance["sha256"] != backbone.provenance["sha256"]
    assert "checkpoint 20 in" in capsys.readouterr().err
    assert len(os.listdir(workdir / "checkpoints_abandoned")) == 1
