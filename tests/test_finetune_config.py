"""configs/finetune.py and the checks on its values: recipes, the grouped keys (and the error an
old flat key gives), value checks by name, the model a config builds on a backbone."""

import os
import re

import pytest

from bertlab.checkpoints import init_from
from bertlab.commands import finetune as finetune_cmd
from bertlab.config_cli import ConfigArgsError, parse_config_args
from bertlab.models import variant_config
from bertlab.train import classifier, finetune
from bertlab.train.loop import TrainConfigError

from finetune_tables import REPO, finetune_configs


def test_recipes_follow_the_paper_and_the_tutorials():
    mrpc = finetune_configs.get_config("task=mrpc,variant=tiny")
    assert (mrpc.task, mrpc.optimizer.lr, mrpc.train.epochs, mrpc.data.batch_size,
            mrpc.data.max_seq_length) == ("mrpc", 2e-5, 5, 32, 128)
    assert mrpc.model.variant == "tiny" and mrpc.optimizer.name == "adamw"
    sst2 = finetune_configs.get_config("sst2")
    assert (sst2.optimizer.lr, sst2.train.epochs, sst2.data.batch_size,
            sst2.optimizer.warmup_fraction) == (2e-5, 3, 32, 0.1)
    snli = finetune_configs.get_config("task=snli")  # KerasNLP semantic-similarity recipe
    assert (snli.optimizer.name, snli.optimizer.lr, snli.optimizer.warmup_fraction,
            snli.train.epochs, snli.data.batch_size, snli.data.eval_split,
            snli.data.test_split) == \
        ("adamw", 1e-4, 0.2, 3, 16, "dev", "test")
    adam = finetune_configs.get_config("task=snli,recipe=adam")
    assert (adam.optimizer.name, adam.optimizer.lr, adam.optimizer.warmup_fraction,
            adam.optimizer.weight_decay, adam.train.epochs) == ("adam", 5e-5, 0.0, 0.0, 1)
    scratch = finetune_configs.get_config("task=imdb,recipe=scratch")
    assert (scratch.model.from_scratch and scratch.data.vocab_size == 20000
            and scratch.data.max_seq_length == 512)
    assert (scratch.model.num_layers, scratch.model.hidden_size, scratch.model.num_heads,
            scratch.model.intermediate_size, scratch.train.epochs) == (1, 64, 2, 128, 3)
    assert scratch.data.eval_split == "test"  # IMDB has no dev split
    frozen = finetune_configs.get_config("task=imdb,recipe=frozen")
    assert frozen.train.freeze_backbone and frozen.model.extra_layers == 2


def test_every_config_key_is_commented():
    source = open(os.path.join(REPO, "configs", "finetune.py")).read()
    body = source[source.index("def get_config"):source.index("    if recipe ==")]
    assignments = re.findall(r"^\s+(?:config|table|model|data|opt|train)\.(\w+) = .*$", body,
                             re.M)
    uncommented = [line for line in re.findall(r"^\s+(?:config|table|model|data|opt|train)\.\w+ = .*$",
                                               body, re.M)
                   if "#" not in line and "ConfigDict()" not in line]
    assert len(assignments) > 30 and uncommented == []


def test_config_argument_errors_name_the_problem():
    with pytest.raises(ValueError, match="unknown task 'nosuch'"):
        finetune_configs.get_config("task=nosuch")
    with pytest.raises(ValueError, match="unknown argument 'lr'"):
        finetune_configs.get_config("task=mrpc,lr=3")
    with pytest.raises(ValueError, match="unknown recipe"):
        finetune_configs.get_config("task=mrpc,recipe=fast")


def test_bad_overrides_exit_with_one_line(tmp_path, capsys):
    base = ["--config", "configs/finetune.py:task=mrpc", "--workdir", str(tmp_path / "w")]
    assert finetune_cmd.main(base + ["--config.optimizer.lrr=1e-4"]) == 2
    assert "did you mean 'optimizer.lr'" in capsys.readouterr().err
    assert finetune_cmd.main(base + ["--config.train.epochs=three"]) == 2
    assert "epochs" in capsys.readouterr().err
    assert finetune_cmd.main(base) == 2  # neither init_from nor from_scratch
    assert "init_from" in capsys.readouterr().err
    missing = str(tmp_path / "no_such_model")
    assert finetune_cmd.main(base + [f"--config.model.init_from={missing}",
                                     f"--config.data.data_dir={tmp_path}"]) == 2
    err = capsys.readouterr().err
    assert "no_such_model" in err and "no such file" in err
    assert not os.path.exists(tmp_path / "w" / "seed_0")


def test_model_overrides_apply_to_a_pretrained_backbone_but_sizes_are_refused():
    backbone = init_from.Backbone(variant_config("tiny", vocab_size=50), None, "vocab.txt", True,
                                  "huggingface", "somewhere")
    config = finetune_configs.get_config("task=sst2")
    config.model.init_from = "somewhere"
    config.model.hidden_dropout, config.model.attention_dropout = 0.3, 0.0
    model_config = classifier.finetune_model_config(config, backbone)
    assert (model_config.hidden_dropout, model_config.attention_dropout) == (0.3, 0.0)
    assert model_config.hidden_size == 128 and model_config.vocab_size == 50
    config.model.hidden_size = 256
    with pytest.raises(TrainConfigError, match=r"model.hidden_size=256 .* has "
                                                           r"hidden_size=128"):
        classifier.finetune_model_config(config, backbone)
    config.model.hidden_size = None
    config.data.max_seq_length = 1024
    with pytest.raises(TrainConfigError, match="max_position_embeddings=512"):
        classifier.finetune_model_config(config, backbone)
    scratch = finetune_configs.get_config("task=imdb,recipe=scratch")
    sizes = classifier.scratch_model_config(scratch, 20000)
    assert (sizes.num_layers, sizes.hidden_size, sizes.num_heads, sizes.intermediate_size,
            sizes.vocab_size, sizes.max_position_embeddings) == (1, 64, 2, 128, 20000, 512)


def test_remat_reaches_the_model_config_from_a_backbone_and_from_scratch():
    """model.remat means what it means in pretraining (BertConfig.remat), default off; a
    pretrained backbone's own setting (say, an export of a rematted pretraining run) is replaced
    by the run's, as dtype is."""
    config = finetune_configs.get_config("task=sst2")
    assert config.model.remat == "none"
    backbone = init_from.Backbone(variant_config("tiny", vocab_size=50, remat="dots"), None,
                                  "vocab.txt", True, "bertlab", "somewhere")
    config.model.init_from = "somewhere"
    assert classifier.finetune_model_config(config, backbone).remat == "none"
    config.model.remat = "layer"
    assert classifier.finetune_model_config(config, backbone).remat == "layer"
    config.model.remat = "full"
    with pytest.raises(TrainConfigError, match=r"model\.remat='full' is not one of none, layer"):
        classifier.finetune_model_config(config, backbone)
    scratch = finetune_configs.get_config("task=imdb,recipe=scratch")
    scratch.model.remat = "dots"
    assert classifier.scratch_model_config(scratch, 20000).remat == "dots"


def test_config_values_are_checked_by_name():
    config = finetune_configs.get_config("task=sst2")
    config.model.init_from = "x"
    for key, value, message in (("optimizer.warmup_fraction", 1.5, "warmup_fraction=1.5"),
                                ("optimizer.name", "sgd", "optimizer.name='sgd'"),
                                ("train.seeds", (1, 1), "repeats a seed"),
                                ("data.batch_size", 0, "batch_size=0")):
        bad = finetune_configs.get_config("task=sst2")
        bad.model.init_from = "x"
        node, *rest = key.split(".")
        if rest:
            bad[node][rest[0]] = value
        else:
            bad[node] = value
        with pytest.raises(TrainConfigError, match=re.escape(message)):
            finetune.check_config(bad)
    finetune.check_config(config)


def test_from_scratch_with_a_given_vocabulary_uses_it_and_keeps_a_copy(tmp_path):
    """The no-pretraining control of a pretraining ablation: random init, but the pretrained
    arms' vocabulary, so only the weights differ."""
    tokens = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "good", "bad", "film", "##s"]
    given = tmp_path / "pretrain_vocab.txt"
    given.write_text("\n".join(tokens) + "\n")
    config = finetune_configs.get_config("task=sst2")
    config.model.from_scratch, config.data.vocab = True, str(given)
    config.model.hidden_size, config.model.num_layers = 32, 1
    config.model.num_heads, config.model.intermediate_size = 2, 64
    finetune.check_config(config)
    workdir = tmp_path / "run"
    workdir.mkdir()
    backbone = classifier.prepare_backbone(config, str(workdir), None)  # no texts: nothing learned
    assert backbone.params is None and backbone.config.vocab_size == 9
    assert open(backbone.vocab_path).read().split() == tokens
    assert backbone.vocab_path == str(workdir / "vocab.txt")
    # a workdir made with another vocabulary is refused, a missing file or init_from too
    (tmp_path / "other.txt").write_text("\n".join(tokens[:-1]) + "\n")
    config.data.vocab = str(tmp_path / "other.txt")
    with pytest.raises(TrainConfigError, match="differs from"):
        classifier.prepare_backbone(config, str(workdir), None)
    config.data.vocab = str(tmp_path / "missing.txt")
    with pytest.raises(TrainConfigError, match="missing.txt': file not found"):
        finetune.check_config(config)
    config.data.vocab, config.model.from_scratch, config.model.init_from = str(given), False, "x"
    with pytest.raises(TrainConfigError, match="only with from_scratch"):
        finetune.check_config(config)


@pytest.mark.parametrize("old, new", [("batch_size=8", "data.batch_size"),
                                      ("seeds=0,1", "train.seeds"), ("epochs=2", "train.epochs"),
                                      ("data_dir=x", "data.data_dir"),
                                      ("init_from=x", "model.init_from"),
                                      ("data_seed=3", "data.seed")])
def test_an_old_flat_key_names_its_new_key(old, new, tmp_path, capsys):
    argv = ["--config", "configs/finetune.py:task=sst2", "--workdir", str(tmp_path)]
    key = old.split("=")[0]
    with pytest.raises(ConfigArgsError) as e:
        parse_config_args(argv + [f"--config.{old}"], prog="finetune")
    assert str(e.value) == (f"--config.{key}: config key {key!r} is now {new!r}; "
                            f"use --config.{new}")
    assert finetune_cmd.main(argv + [f"--config.{old}"]) == 2
    assert f"use --config.{new}" in capsys.readouterr().err
    assert not os.listdir(tmp_path)  # refused before anything is written


def test_every_old_flat_key_maps_to_a_key_of_the_config():
    config = finetune_configs.get_config("task=sst2")
    for old, new in finetune_configs.RENAMED_KEYS.items():
        group, key = new.split(".")
        assert old not in config and key in config[group], (old, new)


def test_train_seed_and_optimizer_lr_mean_what_they_mean_in_pretraining(tmp_path):
    """One run of train.seed unless train.seeds lists several; both set is refused."""
    from bertlab.train import seeds

    argv = ["--config", "configs/finetune.py:task=sst2", "--workdir", str(tmp_path),
            "--config.train.seed=3", "--config.optimizer.lr=1e-4"]
    config, _ = parse_config_args(argv, prog="finetune")
    assert seeds.seeds_of(config.train) == (3,) and config.optimizer.lr == 1e-4
    config.train.seeds = (0, 1)
    config.model.init_from = "x"
    with pytest.raises(TrainConfigError, match="not both"):
        finetune.check_config(config)
    config.train.seed = 0
    finetune.check_config(config)
    assert seeds.seeds_of(config.train) == (0, 1)
