"""configs/pretrain.py's recipe presets (issue 17 item 3): the values each source gives, the
`name,variant=...,steps=...` argument, and every preset training at a tiny size: 1 step, saved,
restored, 1 more step, one compiled train step per start."""

import importlib.util
import os
import random

import numpy as np
import pytest

from bertlab.config_cli import load_config_file
from bertlab.models.config import CONFIG_FIELDS
from bertlab.train import pretrain, steps
from bertlab.train.metric_writer import read_metrics
from bertlab.train.model_config import model_config_from

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RECIPES = ("bert", "roberta", "cramming", "mosaicbert", "modernbert")
WORDS = ("the of and to in a is that for it as was with be by on not he this are or his from at "
         "which but have an they you were her she there had been one all we their has").split()

pytestmark = pytest.mark.usefixtures("module_compilation_cache")


def config_module():
    spec = importlib.util.spec_from_file_location("pretrain_config",
                                                  os.path.join(REPO, "configs/pretrain.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def load(arg):
    return load_config_file(os.path.join(REPO, f"configs/pretrain.py:{arg}"))


def test_variants_alone_are_the_bert_recipe_as_before():
    assert load("tiny").to_dict() == load("bert,variant=tiny").to_dict()
    assert load("base").to_dict() == load("bert").to_dict()   # a recipe alone: base size
    assert load("cramming,variant=tiny").model.variant == "tiny"


def test_the_docstring_lists_every_recipe_and_each_cites_its_source():
    module = config_module()
    assert set(module.RECIPES) == set(RECIPES)
    for name in RECIPES:
        assert name in module.__doc__
    for name, recipe in module.RECIPES.items():
        assert any(year in recipe.source for year in ("2019", "2022", "2023", "2024")), name


def test_a_preset_table_key_the_config_lacks_is_refused():
    module = config_module()
    config = module.variant_config("tiny")
    with pytest.raises(KeyError, match=r"model\.pre_lm in a preset table is not a key"):
        module.apply(config, {"model": {"pre_lm": True}})
    module.apply(config, {"model": {"pre_ln": True}, "train": {"num_steps": 7}})
    assert (config.model.pre_ln, config.train.num_steps) == (True, 7)


def test_recipe_values_from_their_sources():
    c = load("cramming")
    assert (c.model.pre_ln, c.model.activation, c.model.position_embedding) == (
        True, "geglu", "scaled_sinusoidal")
    assert not any(c.model[k] for k in ("norm_bias", "attention_bias", "mlp_bias", "head_bias",
                                        "decoder_bias", "head_transform"))
    assert (c.model.hidden_dropout, c.model.attention_dropout, c.data.max_seq_length) == (0, 0, 128)
    assert (c.data.mask_rate, c.data.next_sentence, c.optimizer.lr, c.optimizer.clip_norm) == (
        0.25, False, 1e-3, 0.5)
    assert (c.train.budget_minutes, c.train.batch_ramp) == (1440, 0.6)
    m = load("mosaicbert")
    assert (m.model.position_embedding, m.model.activation, m.model.vocab_pad_multiple) == (
        "alibi", "geglu", 64)
    assert (m.data.mask_rate, m.data.eval_mask_rate, m.data.next_sentence) == (0.3, 0.15, False)
    assert (m.optimizer.lr, m.optimizer.warmup_fraction, m.optimizer.name) == (5e-4, 0.06, "adamw")
    b = load("modernbert")
    assert (b.model.position_embedding, b.model.rotary_theta, b.model.local_rotary_theta) == (
        "rotary", 160_000.0, 10_000.0)
    assert (b.model.local_window, b.model.global_every, b.model.pre_ln, b.model.norm_bias) == (
        128, 3, True, False)
    assert (b.model.embedding_norm, b.data.mask_rate, b.data.next_sentence) == (True, 0.3, False)
    r = load("roberta")
    assert (r.data.next_sentence, r.data.short_seq_prob, r.data.batch_size) == (False, 0.0, 8192)
    for name in RECIPES:  # every key a BertConfig field, every preset a valid config
        config = load(name)
        assert set(config.model) - {"variant"} == set(CONFIG_FIELDS) - {"vocab_size"}
        pretrain.check_config(config)


def test_steps_option_scales_the_warm_up_and_the_cadence():
    c = load("tiny,steps=300")
    # the paper's 10k warm-up of 1M steps -> 3 of 300; logs, evaluations, checkpoints fit the run
    assert (c.train.num_steps, c.optimizer.warmup_steps) == (300, 3)
    assert (c.train.log_every, c.train.eval_every, c.train.checkpoint_every) == (30, 100, 150)
    assert load("cramming,variant=tiny,minutes=5").train.budget_minutes == 5.0
    for bad in ("tiny,variant=mini", "cramming,size=tiny", "nosuch", "cramming,variant=huge"):
        with pytest.raises(ValueError, match="configs/pretrain.py"):
            config_module().get_config(bad)


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    """One vocabulary and two datasets (with and without NSP pairs) that every preset trains on:
    made once, so the tests time the presets, not the data."""
    from bertlab.data.pretraining.create import create_pretraining_data
    from bertlab.text.tokenizer import Tokenizer, save_vocab, vocab_from_tokens

    rng = random.Random(2)
    root = tmp_path_factory.mktemp("prepared")
    corpus = root / "corpus.txt"
    with open(corpus, "w") as f:
        for _ in range(30):
            for _ in range(rng.randint(3, 8)):
                f.write(" ".join(rng.choice(WORDS) for _ in range(rng.randint(5, 20))) + ".\n")
            f.write("\n")
    vocab = vocab_from_tokens(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "."] + WORDS)
    save_vocab(vocab, str(root / "vocab.txt"))
    for nsp in (False, True):
        create_pretraining_data([str(corpus)], Tokenizer(vocab, True), str(root / f"nsp{nsp}"),
                                max_seq_length=32, short_seq_prob=0.1, next_sentence=nsp,
                                eval_fraction=0.1, seed=12345, doc_boundary="blank")
    return root


def tiny(name, prepared):
    """The preset at a tiny size on a tiny corpus: every recipe knob as the preset sets it, the
    shapes (width, length, batch) shrunk."""
    config = load(f"{name},variant=tiny")
    model, data, opt, train = config.model, config.data, config.optimizer, config.train
    model.hidden_size, model.num_layers, model.num_heads, model.intermediate_size = 32, 2, 2, 64
    if model.local_window:
        model.local_window = 8    # layer 1 is local, its window shorter than the sequence
    data.prepared = str(prepared / f"nsp{bool(data.next_sentence)}")
    data.vocab = str(prepared / "vocab.txt")
    data.max_seq_length, data.batch_size = 32, 8
    data.max_predictions = int(np.ceil(data.mask_rate * 32))
    opt.grad_accum_steps = 2      # keeps a ramp (cramming) a ramp: 1 then 2 micro-batches of 4
    opt.warmup_steps = min(opt.warmup_steps, 1)
    train.num_steps, train.log_every, train.eval_every, train.eval_batches = 2, 1, 0, 1
    train.checkpoint_every, train.peak_flops = 1, 1e9
    return config


@pytest.mark.parametrize("name", RECIPES)
def test_each_preset_trains_saves_and_restores(name, prepared, tmp_path, monkeypatch, capsys):
    compiled = []
    original = steps.jit_train_step
    monkeypatch.setattr(pretrain.steps, "jit_train_step",
                        lambda **kw: compiled.append(original(**kw)) or compiled[-1])
    config = tiny(name, prepared)
    workdir = str(tmp_path / name)
    config.train.stop_after = 1
    assert pretrain.train_and_evaluate(config, workdir)["step"] == 1
    config.train.stop_after = 0
    final = pretrain.train_and_evaluate(config, workdir)
    assert "resuming from step 1" in capsys.readouterr().out
    assert final["step"] == 2 and np.isfinite(final["loss"]) and "eval_mlm_loss" in final
    assert [f._cache_size() for f in compiled] == [1, 1]   # one compile per start
    lines = read_metrics(os.path.join(workdir, "metrics.jsonl"))["train"]
    assert sorted(lines) == [1, 2]
    if name == "cramming":   # the budget schedule and the ramp are on
        assert [lines[s]["micro_batches"] for s in (1, 2)] == [1, 1]
        assert "train_seconds" in lines[2]
