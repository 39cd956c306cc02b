"""Checkpoint import/export: Google TF, HuggingFace (safetensors, .bin), our own directory, the CLI.

References are transformers' PyTorch BERT models with random weights; a Google checkpoint is
written here with the original variable names by tf.compat.v1's Saver, from a name mapping
written out independently of bertlab's table.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import pickle
import re
import zipfile

import jax
import numpy as np
import pytest

from bertlab.checkpoints import CheckpointError, detect_layout, load_pretrained, save_bertlab
from bertlab.checkpoints import hf
from bertlab.checkpoints.names import flatten_params
from bertlab.models import (BertConfig, BertForPreTraining, BertForSequenceClassification,
                            BertModel, ConfigError)

TOLERANCE = 1e-5
HF_TINY = dict(vocab_size=61, hidden_size=24, num_hidden_layers=2, num_attention_heads=2,
               intermediate_size=40, max_position_embeddings=20)


@pytest.fixture(scope="module")
def torch():
    return pytest.importorskip("torch")


@pytest.fixture(scope="module")
def transformers():
    return pytest.importorskip("transformers")


def randomised(module, torch, seed=0):
    """Every parameter away from its init (LayerNorm 1 / bias 0), so no mapping error can hide."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in module.parameters():
            parameter.add_(torch.randn(parameter.shape, generator=generator) * 0.1)
    return module.eval()


def inputs(vocab_size):
    ids = np.array([[2, 7, 9, 11, 3, 13, 17, 3], [2, 5, 6, 3, 8, 3, 0, 0]], np.int32) % vocab_size
    segments = np.array([[0, 0, 0, 0, 0, 1, 1, 1], [0, 0, 0, 0, 1, 1, 0, 0]], np.int32)
    mask = np.array([[1] * 8, [1] * 6 + [0] * 2], np.int32)
    positions = np.array([[1, 3, 6], [2, 4, 4]], np.int32)
    return ids, segments, mask, positions


def torch_outputs(model, torch, ids, segments, mask):
    with torch.no_grad():
        return model(input_ids=torch.tensor(ids, dtype=torch.long),
                     token_type_ids=torch.tensor(segments, dtype=torch.long),
                     attention_mask=torch.tensor(mask, dtype=torch.long))


def assert_pretraining_matches(config, params, reference, torch):
    ids, segments, mask, positions = inputs(config.vocab_size)
    out = BertForPreTraining(config).apply({"params": params}, ids, segments, mask, positions)
    expected = torch_outputs(reference, torch, ids, segments, mask)
    logits = np.take_along_axis(expected.prediction_logits.numpy(), positions[:, :, None], axis=1)
    np.testing.assert_allclose(out["mlm_logits"], logits, atol=TOLERANCE, rtol=0)
    np.testing.assert_allclose(out["nsp_logits"], expected.seq_relationship_logits.numpy(),
                               atol=TOLERANCE, rtol=0)


# ------------------------------------------------------------------------- Google TF checkpoint


def original_tf_names(state: dict) -> dict[str, np.ndarray]:
    """PyTorch BERT state dict -> google-research/bert variable names and layouts (by hand)."""
    special = {"cls.predictions.bias": "cls/predictions/output_bias",
               "cls.seq_relationship.weight": "cls/seq_relationship/output_weights",
               "cls.seq_relationship.bias": "cls/seq_relationship/output_bias"}
    variables = {}
    for name, tensor in state.items():
        value = tensor.numpy()
        if name in ("cls.predictions.decoder.weight", "cls.predictions.decoder.bias",
                    "bert.embeddings.position_ids"):
            continue  # tied copies / buffers: the original has no such variables
        if name in special:
            variables[special[name]] = value
            continue
        tf_name = re.sub(r"layer\.(\d+)", r"layer_\1", name).replace(".", "/")
        if tf_name.endswith("_embeddings/weight"):
            tf_name = tf_name.removesuffix("/weight")
        elif "/LayerNorm/" in tf_name:
            tf_name = tf_name.replace("/weight", "/gamma").replace("/bias", "/beta")
        elif tf_name.endswith("/weight"):
            tf_name, value = tf_name.removesuffix("/weight") + "/kernel", value.T
        variables[tf_name] = value
    return variables


def write_tf_checkpoint(directory, variables: dict[str, np.ndarray], bert_config: dict):
    tf = pytest.importorskip("tensorflow")
    with tf.Graph().as_default():
        saved = {name: tf.compat.v1.Variable(value, name=f"v{i}")
                 for i, (name, value) in enumerate(variables.items())}
        saver = tf.compat.v1.train.Saver(saved)
        with tf.compat.v1.Session() as session:
            session.run(tf.compat.v1.global_variables_initializer())
            saver.save(session, str(directory / "bert_model.ckpt"), write_meta_graph=False)
    (directory / "bert_config.json").write_text(json.dumps(bert_config))
    (directory / "vocab.txt").write_text("\n".join(f"tok{i}" for i in range(bert_config["vocab_size"])))


def test_google_checkpoint_imports_with_heads_and_matches_transformers(tmp_path, torch, transformers):
    hf_config = transformers.BertConfig(**HF_TINY, hidden_act="gelu_new")  # = the original's gelu
    reference = randomised(transformers.BertForPreTraining(hf_config), torch)
    variables = original_tf_names(reference.state_dict())
    assert variables["cls/seq_relationship/output_weights"].shape == (2, 24)  # TF's transposed layout
    rng = np.random.default_rng(0)
    variables["output_weights"] = rng.normal(size=(3, 24)).astype(np.float32)  # run_classifier.py head
    variables["output_bias"] = rng.normal(size=(3,)).astype(np.float32)
    for name in ("bert/pooler/dense/kernel", "cls/predictions/output_bias"):  # optimizer slots
        variables[name + "/adam_m"] = np.zeros_like(variables[name])
        variables[name + "/adam_v"] = np.zeros_like(variables[name])
    variables["global_step"] = np.array(1000, np.int64)
    google_config = {k: v for k, v in hf_config.to_dict().items() if k in (
        "vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
        "max_position_embeddings", "type_vocab_size", "initializer_range", "hidden_dropout_prob",
        "attention_probs_dropout_prob")}
    write_tf_checkpoint(tmp_path, variables, {**google_config, "hidden_act": "gelu"})

    assert detect_layout(tmp_path) == "google"
    config, params, vocab = load_pretrained(tmp_path)
    assert config.activation == "gelu_tanh" and vocab == tmp_path / "vocab.txt"
    assert set(params) == {"bert", "cls", "classifier"}
    assert set(params["cls"]) == {"predictions", "seq_relationship"}
    np.testing.assert_array_equal(params["classifier"]["kernel"], variables["output_weights"].T)
    pretraining = {"bert": params["bert"], "cls": params["cls"]}
    assert_pretraining_matches(config, pretraining, reference, torch)

    # the same checkpoint through its prefix, as a bare backbone
    from bertlab.checkpoints.google import load_google
    _, backbone = load_google(tmp_path / "bert_model.ckpt", model="bert")
    ids, segments, mask, _ = inputs(config.vocab_size)
    sequence, pooled = BertModel(config).apply({"params": backbone}, ids, segments, mask)
    expected = reference.bert(input_ids=torch.tensor(ids, dtype=torch.long),
                              token_type_ids=torch.tensor(segments, dtype=torch.long),
                              attention_mask=torch.tensor(mask, dtype=torch.long))
    real = mask.astype(bool)
    np.testing.assert_allclose(np.asarray(sequence)[real],
                               expected.last_hidden_state.detach().numpy()[real], atol=TOLERANCE, rtol=0)
    np.testing.assert_allclose(pooled, expected.pooler_output.detach().numpy(), atol=TOLERANCE, rtol=0)


def test_google_checkpoint_errors_name_the_file_or_tensor(tmp_path):
    from bertlab.checkpoints.google import find_checkpoint

    with pytest.raises(CheckpointError, match="no TF checkpoint"):
        find_checkpoint(tmp_path)
    (tmp_path / "bert_model.ckpt.index").write_bytes(b"")
    with pytest.raises(CheckpointError, match="bert_config.json not found"):
        find_checkpoint(tmp_path)
    with pytest.raises(CheckpointError, match="unzip the download first"):
        detect_layout(tmp_path / "uncased_L-12_H-768_A-12.zip")


# ------------------------------------------------------------------------- HuggingFace import


def save_state(directory, state: dict, config: dict):
    from safetensors.numpy import save_file

    directory.mkdir(parents=True, exist_ok=True)
    save_file({k: np.ascontiguousarray(v) for k, v in state.items()}, str(directory / "model.safetensors"),
              metadata={"format": "pt"})
    (directory / "config.json").write_text(json.dumps({"model_type": "bert", **config}))
    return directory


@pytest.fixture(scope="module")
def reference_pretraining(torch, transformers):
    model = randomised(transformers.BertForPreTraining(transformers.BertConfig(**HF_TINY)), torch, seed=1)
    state = {k: v.numpy() for k, v in model.state_dict().items()}
    return model, state


def test_hf_safetensors_old_names_and_missing_or_unknown_tensors(tmp_path, reference_pretraining, torch, caplog):
    model, state = reference_pretraining
    # an old-style file: LayerNorm.gamma/beta, tied decoder written out, position_ids buffer
    old = {re.sub(r"LayerNorm\.weight$", "LayerNorm.gamma", re.sub(r"LayerNorm\.bias$", "LayerNorm.beta", k)): v
           for k, v in state.items()}
    old["bert.embeddings.position_ids"] = np.arange(20)[None]
    directory = save_state(tmp_path / "old", old, HF_TINY)
    config, params = hf.load_hf(directory, model="pretraining")
    assert_pretraining_matches(config, params, model, torch)

    backbone_only = {k: v for k, v in state.items() if k.startswith("bert.")}
    directory = save_state(tmp_path / "backbone", backbone_only, HF_TINY)
    with pytest.raises(CheckpointError, match=r"missing 7 tensor\(s\) for model='pretraining': "
                                              r"cls\.predictions\.bias, .*cls\.seq_relationship\.bias"):
        hf.load_hf(directory, model="pretraining")
    with caplog.at_level(logging.WARNING):
        _, params = hf.load_hf(directory, model="pretraining", init_missing=True)
    assert "initialised 7 missing tensor(s) randomly" in caplog.text and "cls.seq_relationship.weight" in caplog.text
    assert params["cls"]["seq_relationship"]["output_weights"].shape == (2, 24)
    _, params = hf.load_hf(directory)  # auto: only what is there
    assert set(params) == {"bert"}

    unknown = dict(backbone_only, **{"bert.encoder.layer.0.attention.self.distance_embedding.weight": np.zeros((5, 2))})
    directory = save_state(tmp_path / "unknown", unknown, HF_TINY)
    with pytest.raises(CheckpointError, match="no BERT model uses: bert.encoder.layer.0.attention.self.distance_embedding"):
        hf.load_hf(directory)
    assert set(hf.load_hf(directory, strict=False)[1]) == {"bert"}

    wrong = dict(backbone_only, **{"bert.pooler.dense.weight": np.zeros((24, 23), np.float32)})
    directory = save_state(tmp_path / "wrong", wrong, HF_TINY)
    with pytest.raises(CheckpointError, match=r"'bert\.pooler\.dense\.weight' has shape \(24, 23\) but "
                                              r"the model \(bert/pooler/dense/kernel\) needs \(24, 24\)"):
        hf.load_hf(directory)

    partial = dict(backbone_only, **{"cls.seq_relationship.weight": state["cls.seq_relationship.weight"]})
    directory = save_state(tmp_path / "partial", partial, HF_TINY)
    with pytest.raises(CheckpointError, match="nsp head is incomplete; missing cls.seq_relationship.bias"):
        hf.load_hf(directory)
    with pytest.raises(CheckpointError, match="no weights file"):
        hf.hf_tensor_source(tmp_path)


def test_pytorch_bin_is_read_without_torch_and_without_running_code(tmp_path, reference_pretraining, torch):
    model, state = reference_pretraining
    directory = tmp_path / "bin"
    directory.mkdir()
    saved = model.state_dict()
    saved["bert.pooler.dense.weight"] = saved["bert.pooler.dense.weight"].t()  # non-contiguous strides
    saved["extra.bf16"] = torch.arange(4, dtype=torch.bfloat16)
    torch.save(saved, directory / "pytorch_model.bin")
    tensors = hf.read_torch_bin(directory / "pytorch_model.bin")
    np.testing.assert_array_equal(tensors["bert.pooler.dense.weight"], state["bert.pooler.dense.weight"].T)
    np.testing.assert_array_equal(tensors["extra.bf16"].astype(np.float32), [0, 1, 2, 3])
    assert set(tensors) == set(saved)

    torch.save(model.state_dict(), directory / "pytorch_model.bin")
    (directory / "config.json").write_text(json.dumps({"model_type": "bert", **HF_TINY}))
    config, params = hf.load_hf(directory, model="pretraining")
    assert_pretraining_matches(config, params, model, torch)

    marker = tmp_path / "pwned"

    class Exploit:
        def __reduce__(self):
            import os
            return os.system, (f"touch {marker}",)

    evil = tmp_path / "evil.bin"
    with zipfile.ZipFile(evil, "w") as archive:
        archive.writestr("archive/data.pkl", pickle.dumps({"x": Exploit()}))
    with pytest.raises(pickle.UnpicklingError, match=r"refusing to load (posix|os)\.system"):
        hf.read_torch_bin(evil)
    assert not marker.exists()


# ------------------------------------------------------------------------- HuggingFace export


def random_params(module, config, seed=0):
    """N(0, 0.1) draws in the module's tree (eval_shape: no init run, shapes are what matter)."""
    ids, segments, mask, _ = inputs(config.vocab_size)
    shapes = jax.eval_shape(module.init, jax.random.PRNGKey(0), ids, segments, mask)["params"]
    rng = np.random.default_rng(seed)
    return jax.tree_util.tree_map(lambda x: rng.normal(0, 0.1, x.shape).astype(np.float32), shapes)


def test_export_to_hf_loads_in_transformers_with_the_same_outputs(tmp_path, torch, transformers):
    config = BertConfig(vocab_size=61, hidden_size=24, num_layers=2, num_heads=2, intermediate_size=40,
                        max_position_embeddings=20, activation="gelu_tanh")
    params = random_params(BertForPreTraining(config), config)
    hf.save_hf(tmp_path / "pre", config, params, vocab_path=None)
    written = json.loads((tmp_path / "pre" / "config.json").read_text())
    assert written["hidden_act"] == "gelu_new" and written["architectures"] == ["BertForPreTraining"]

    reference, info = transformers.BertForPreTraining.from_pretrained(tmp_path / "pre", output_loading_info=True)
    assert info["missing_keys"] == [] and info["unexpected_keys"] == []
    assert_pretraining_matches(config, params, reference.eval(), torch)

    ids, segments, mask, _ = inputs(config.vocab_size)
    _, pooled = BertModel(config).apply({"params": params["bert"]}, ids, segments, mask)
    # a bare backbone is written without the "bert." prefix, like transformers' BertModel
    hf.save_hf(tmp_path / "base", config, params["bert"])
    reference, info = transformers.BertModel.from_pretrained(tmp_path / "base", output_loading_info=True)
    assert info["missing_keys"] == [] and info["unexpected_keys"] == []
    np.testing.assert_allclose(torch_outputs(reference.eval(), torch, ids, segments, mask).pooler_output.numpy(),
                               pooled, atol=TOLERANCE, rtol=0)


@pytest.mark.slow  # transformers' Flax from_pretrained initialises a model eagerly first (~10 s)
def test_export_loads_in_flax_bert_with_the_same_outputs(tmp_path, transformers):
    config = BertConfig(vocab_size=61, hidden_size=24, num_layers=2, num_heads=2, intermediate_size=40,
                        max_position_embeddings=20)
    params = random_params(BertForPreTraining(config), config, seed=4)
    hf.save_hf(tmp_path, config, params)
    ids, segments, mask, _ = inputs(config.vocab_size)
    flax_model = transformers.FlaxBertModel.from_pretrained(tmp_path)  # reads the PyTorch safetensors
    expected = flax_model(ids, attention_mask=mask, token_type_ids=segments)
    sequence, pooled = BertModel(config).apply({"params": params["bert"]}, ids, segments, mask)
    np.testing.assert_allclose(sequence, expected.last_hidden_state, atol=TOLERANCE, rtol=0)
    np.testing.assert_allclose(pooled, expected.pooler_output, atol=TOLERANCE, rtol=0)


def test_export_of_classifier_and_untied_decoder(tmp_path, torch, transformers):
    config = BertConfig(vocab_size=61, hidden_size=24, num_layers=1, num_heads=2, intermediate_size=40,
                        max_position_embeddings=20, tie_embeddings=False)
    classifier = BertForSequenceClassification(config, num_labels=3)
    params = random_params(classifier, config, seed=2)
    hf.save_hf(tmp_path / "cls", config, params)
    reference = transformers.BertForSequenceClassification.from_pretrained(tmp_path / "cls").eval()
    ids, segments, mask, _ = inputs(config.vocab_size)
    np.testing.assert_allclose(classifier.apply({"params": params}, ids, segments, mask),
                               torch_outputs(reference, torch, ids, segments, mask).logits.numpy(),
                               atol=TOLERANCE, rtol=0)

    params = random_params(BertForPreTraining(config), config, seed=3)
    hf.save_hf(tmp_path / "untied", config, params)
    reference, info = transformers.BertForPreTraining.from_pretrained(tmp_path / "untied", output_loading_info=True)
    assert info["missing_keys"] == []
    assert_pretraining_matches(config, params, reference.eval(), torch)


def test_config_translation_both_ways_and_refusals():
    for hf_act, ours in [("gelu", "gelu"), ("gelu_new", "gelu_tanh"), ("gelu_pytorch_tanh", "gelu_tanh"),
                         ("relu", "relu")]:
        config = hf.config_from_hf({**HF_TINY, "hidden_act": hf_act})
        assert config.activation == ours
        assert hf.config_from_hf(hf.config_to_hf(config)) == config
    with pytest.raises(ConfigError, match="hidden_act='silu' has no bertlab equivalent"):
        hf.config_from_hf({**HF_TINY, "hidden_act": "silu"})
    with pytest.raises(ConfigError, match="position_embedding_type='relative_key'"):
        hf.config_from_hf({**HF_TINY, "position_embedding_type": "relative_key"})
    from bertlab.checkpoints.google import config_from_google
    assert config_from_google({**HF_TINY, "hidden_act": "gelu"}).activation == "gelu_tanh"
    for knob in (dict(pre_ln=True), dict(position_embedding="rotary"), dict(activation="geglu")):
        with pytest.raises(ConfigError, match=f"{next(iter(knob))}=.*has no transformers equivalent"):
            hf.config_to_hf(BertConfig(**knob))


def test_extra_classifier_layers_refuse_hf_export(tmp_path):
    config = BertConfig(vocab_size=61, hidden_size=24, num_layers=1, num_heads=2, intermediate_size=40,
                        max_position_embeddings=20)
    params = random_params(BertForSequenceClassification(config, num_labels=2, extra_layers=1), config)
    with pytest.raises(CheckpointError, match="extra_layers have no HuggingFace equivalent"):
        hf.save_hf(tmp_path, config, params)


# ------------------------------------------------------------------------- bertlab directory, CLI


def test_bertlab_directory_round_trips_every_knob(tmp_path):
    config = BertConfig(vocab_size=61, hidden_size=24, num_layers=1, num_heads=2, intermediate_size=40,
                        max_position_embeddings=20, pre_ln=True, activation="geglu",
                        position_embedding="rotary", tie_embeddings=False, dtype="bfloat16")
    params = random_params(BertForPreTraining(config), config)
    vocab = tmp_path / "vocab.txt"
    vocab.write_text("[PAD]\n[UNK]\n")
    save_bertlab(tmp_path / "out", config, params, vocab)
    assert detect_layout(tmp_path / "out") == "bertlab"
    loaded_config, loaded, loaded_vocab = load_pretrained(tmp_path / "out")
    assert loaded_config == config and loaded_vocab.read_text() == "[PAD]\n[UNK]\n"
    before, after = flatten_params(params), flatten_params(loaded)
    assert before.keys() == after.keys()
    for path in before:
        np.testing.assert_array_equal(before[path], after[path])


def test_convert_command_round_trip_and_refusal(tmp_path, reference_pretraining, capsys):
    from bertlab.cli import main

    _, state = reference_pretraining
    source = save_state(tmp_path / "hf", state, {**HF_TINY, "hidden_act": "gelu"})
    (source / "vocab.txt").write_text("a\nb\n")
    assert main(["convert", "--from", "hf", str(source), "--to", "bertlab", str(tmp_path / "ours"),
                 "--check"]) == 0
    out = capsys.readouterr().out
    assert "heads: cls/predictions, cls/seq_relationship" in out
    assert "max |diff| mlm_logits = 0" in out and "max |diff| nsp_logits = 0" in out
    assert (tmp_path / "ours" / "vocab.txt").read_text() == "a\nb\n"
    assert main(["convert", "--from", "bertlab", str(tmp_path / "ours"), "--to", "hf",
                 str(tmp_path / "back"), "--check"]) == 0
    back = hf.hf_tensor_source(tmp_path / "back")
    for name, value in state.items():
        if name not in ("cls.predictions.decoder.weight", "cls.predictions.decoder.bias"):
            np.testing.assert_array_equal(back.read(name), value)

    config, params, _ = load_pretrained(tmp_path / "ours")
    save_bertlab(tmp_path / "preln", dataclasses.replace(config, pre_ln=True), {"bert": params["bert"]})
    assert main(["convert", "--from", "bertlab", str(tmp_path / "preln"), "--to", "hf", str(tmp_path / "x")]) == 2
    assert "pre_ln=True has no transformers equivalent" in capsys.readouterr().err


def test_truncated_weights_are_one_line_naming_the_file(tmp_path, capsys):
    """A cut download: safetensors' SafetensorError ('incomplete metadata, file not fully
    covered') becomes a CheckpointError naming the file, and `bertlab convert` one line, exit 2."""
    import os

    from bertlab.cli import main

    config = BertConfig(vocab_size=61, hidden_size=24, num_layers=1, num_heads=2,
                        intermediate_size=40, max_position_embeddings=20)
    params = random_params(BertModel(config), config)
    hf.save_hf(tmp_path / "hf", config, params)
    save_bertlab(tmp_path / "ours", config, {"bert": params})
    for weights in (tmp_path / "hf" / "model.safetensors", tmp_path / "ours" / "params.safetensors"):
        os.truncate(weights, weights.stat().st_size // 2)
        with pytest.raises(CheckpointError, match=rf"^{re.escape(str(weights))}: not a readable "
                                                  r"safetensors file \(.*\); the file is damaged"):
            load_pretrained(weights.parent)
        layout = "hf" if weights.parent.name == "hf" else "bertlab"
        assert main(["convert", "--from", layout, str(weights.parent), "--to", "bertlab",
                     str(tmp_path / f"out_{layout}")]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith(f"bertlab convert: {weights}: not a readable")
    (tmp_path / "msgpack").mkdir()
    (tmp_path / "msgpack" / "config.json").write_text(json.dumps({**HF_TINY, "model_type": "bert"}))
    (tmp_path / "msgpack" / "flax_model.msgpack").write_bytes(b"\x82\xa4bert\x81")  # cut short
    with pytest.raises(CheckpointError, match=r"flax_model.msgpack: not a readable msgpack file"):
        load_pretrained(tmp_path / "msgpack")
