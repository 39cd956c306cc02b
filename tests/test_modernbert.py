"""HuggingFace ModernBERT directories into bertlab and back (bertlab.checkpoints.modernbert).

Reference: transformers' PyTorch ModernBERT (4.57), randomly initialised and perturbed (every
weight, LayerNorms included), saved with save_pretrained, at odd configs where the sliding
window matters at short lengths (local_attention 4 or 8 with 13-token rows). Without
flash-attn, transformers runs its padded path on CPU (a 4-d padding mask, plus a sliding-window
mask on local layers); padding rows differ there by construction, so every comparison is on
real tokens. Tolerance 1e-5 in float32, with the eager and the sdpa attention.
"""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from bertlab.checkpoints import load_pretrained  # noqa: E402
from bertlab.checkpoints import modernbert  # noqa: E402
from bertlab.checkpoints.names import CheckpointError  # noqa: E402
from bertlab.models import (BertForPreTraining, BertForSequenceClassification,  # noqa: E402
                            BertModel, ConfigError)

TOL = 1e-5
VOCAB = 97
CONFIGS = {
    # biases everywhere, mean pooling, 3 heads of 16, global on layers 0 and 3, window 4 (+-2)
    "biased_mean_every3_window4": dict(
        hidden_size=48, num_attention_heads=3, intermediate_size=40, num_hidden_layers=4,
        global_attn_every_n_layers=3, local_attention=4, global_rope_theta=1000.0,
        local_rope_theta=30.0, norm_bias=True, attention_bias=True, mlp_bias=True,
        classifier_bias=True, classifier_pooling="mean"),
    # ModernBERT's own biases (none but the decoder's), 5 heads of 8, every 2nd layer global,
    # window 8, ModernBERT's thetas
    "biasless_every2_window8": dict(
        hidden_size=40, num_attention_heads=5, intermediate_size=24, num_hidden_layers=3,
        global_attn_every_n_layers=2, local_attention=8, global_rope_theta=160000.0,
        local_rope_theta=10000.0),
    # SwiGLU, relu head, untied decoder without bias, no local theta, odd head size 12
    "swiglu_untied_every2_window4": dict(
        hidden_size=36, num_attention_heads=3, intermediate_size=30, num_hidden_layers=5,
        global_attn_every_n_layers=2, local_attention=4, global_rope_theta=500.0,
        local_rope_theta=None, hidden_activation="silu", classifier_activation="relu",
        tie_word_embeddings=False, decoder_bias=False),
}


def hf_config(name: str, **overrides):
    values = dict(vocab_size=VOCAB, max_position_embeddings=64, pad_token_id=0, bos_token_id=1,
                  eos_token_id=2, cls_token_id=1, sep_token_id=2, reference_compile=False,
                  num_labels=3, **CONFIGS[name])
    values.update(overrides)
    return transformers.ModernBertConfig(**values)


def hf_model(architecture: str, config, seed: int = 0, implementation: str = "eager"):
    """A randomly initialised model with every weight perturbed (LayerNorm scales are no
    longer 1, biases no longer 0), in eval mode."""
    torch.manual_seed(seed)
    model = getattr(transformers, architecture)._from_config(
        config, attn_implementation=implementation).eval()
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(torch.randn_like(parameter) * 0.1)
    return model


def batch():
    """Three 13-token rows; the second and third padded after 9 and 4 tokens."""
    rng = np.random.default_rng(0)
    ids = rng.integers(3, VOCAB, (3, 13))
    mask = np.ones((3, 13), np.int64)
    mask[1, 9:] = 0
    mask[2, 4:] = 0
    ids[:, 0] = 1
    ids[mask == 0] = 0
    return ids, np.zeros_like(ids), mask


def reference_outputs(model, ids, mask) -> dict:
    with torch.no_grad():
        args = dict(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask))
        backbone = model if isinstance(model, transformers.ModernBertModel) else model.model
        out = {"sequence": backbone(**args).last_hidden_state.numpy()}
        if not isinstance(model, transformers.ModernBertModel):
            out["logits"] = model(**args).logits.numpy()
    return out


def assert_close_on_real_tokens(ours, theirs, mask):
    ours, theirs = np.asarray(ours, np.float64), np.asarray(theirs, np.float64)
    if ours.ndim == 3:
        real = mask.astype(bool)
        ours, theirs = ours[real], theirs[real]
    np.testing.assert_allclose(ours, theirs, atol=TOL, rtol=0)


def our_outputs(config, params, ids, segments, mask) -> dict:
    out = {"sequence": BertModel(config).apply({"params": params["bert"]}, ids, segments, mask)[0]}
    if "cls" in params:
        out["logits"] = BertForPreTraining(config, with_nsp=False).apply(
            {"params": params}, ids, segments, mask)["mlm_logits"]
    if "classifier" in params:
        labels = params["classifier"]["kernel"].shape[-1]
        out["logits"] = BertForSequenceClassification(config, labels).apply(
            {"params": params}, ids, segments, mask)
    return out


# ---------------------------------------------------------------------------------- import


ARCHITECTURES = ("ModernBertForMaskedLM", "ModernBertForSequenceClassification", "ModernBertModel")
# Every config with the eager attention; sdpa (the same masks, another kernel) on one config,
# its MLM model by default and the other two classes with BERTLAB_SLOW=1.
IMPORT_CASES = ([(name, arch, "eager") for name in CONFIGS for arch in ARCHITECTURES]
                + [("biased_mean_every3_window4", "ModernBertForMaskedLM", "sdpa")]
                + [pytest.param("biased_mean_every3_window4", arch, "sdpa", marks=pytest.mark.slow)
                   for arch in ARCHITECTURES[1:]])


@pytest.mark.parametrize("name, architecture, implementation", IMPORT_CASES)
def test_import_matches_transformers(name, architecture, implementation, tmp_path):
    model = hf_model(architecture, hf_config(name), implementation=implementation)
    model.save_pretrained(tmp_path)
    ids, segments, mask = batch()
    theirs = reference_outputs(model, ids, mask)
    config, params, _ = modernbert.load_modernbert(tmp_path)
    params = params if "bert" in params else {"bert": params}
    ours = our_outputs(config, params, ids, segments, mask)
    assert set(ours) == set(theirs)
    for key in theirs:
        assert_close_on_real_tokens(ours[key], theirs[key], mask)


def test_config_mapping_by_hand():
    config = modernbert.config_from_modernbert(hf_config("biased_mean_every3_window4").to_dict())
    assert (config.local_window, config.global_every) == (4, 3)
    assert (config.rotary_theta, config.local_rotary_theta) == (1000.0, 30.0)
    assert [config.is_global_layer(i) for i in range(4)] == [True, False, False, True]
    assert (config.activation, config.pre_ln, config.first_layer_attention_norm,
            config.type_vocab_size, config.pooler, config.classifier_pooling) == (
        "geglu", True, False, 0, "transform", "mean")
    swiglu = modernbert.config_from_modernbert(hf_config("swiglu_untied_every2_window4").to_dict())
    assert (swiglu.activation, swiglu.head_activation, swiglu.tie_embeddings,
            swiglu.decoder_bias, swiglu.local_rotary_theta) == ("swiglu", "relu", False, False, None)
    all_global = modernbert.config_from_modernbert(
        hf_config("biased_mean_every3_window4", global_attn_every_n_layers=1).to_dict())
    assert (all_global.local_window, all_global.global_every, all_global.local_rotary_theta) == \
        (0, 1, None)
    with pytest.raises(ConfigError, match="hidden_activation='tanh'"):
        modernbert.config_from_modernbert(hf_config("biasless_every2_window8",
                                                    hidden_activation="tanh").to_dict())


def test_the_window_matters_at_these_lengths(tmp_path):
    """Loaded as all-global, the same weights give other outputs: the window is exercised."""
    model = hf_model("ModernBertModel", hf_config("biasless_every2_window8"))
    model.save_pretrained(tmp_path)
    ids, segments, mask = batch()
    config, params, _ = modernbert.load_modernbert(tmp_path)
    windowed = BertModel(config).apply({"params": params["bert"]}, ids, segments, mask)[0]
    everywhere = dataclasses.replace(config, local_window=0, global_every=1,
                                     local_rotary_theta=None)
    glob = BertModel(everywhere).apply({"params": params["bert"]}, ids, segments, mask)[0]
    assert np.abs(np.asarray(windowed - glob))[0].max() > 1e-3


def test_missing_and_unknown_tensors_are_named(tmp_path):
    from safetensors.numpy import load_file, save_file

    hf_model("ModernBertForMaskedLM", hf_config("biasless_every2_window8")).save_pretrained(tmp_path)
    tensors = load_file(str(tmp_path / "model.safetensors"))
    del tensors["model.layers.1.mlp.Wo.weight"]
    save_file(tensors, str(tmp_path / "model.safetensors"), metadata={"format": "pt"})
    with pytest.raises(CheckpointError, match=r"missing 1 tensor\(s\).*model.layers.1.mlp.Wo.weight"):
        modernbert.load_modernbert(tmp_path)


# ---------------------------------------------------------------------------------- export


@pytest.mark.parametrize("architecture, name", [
    ("ModernBertForMaskedLM", "biased_mean_every3_window4"),
    ("ModernBertForMaskedLM", "swiglu_untied_every2_window4"),
    ("ModernBertForSequenceClassification", "biasless_every2_window8"),
    ("ModernBertModel", "biased_mean_every3_window4"),
])
def test_import_export_round_trip_loads_in_transformers(architecture, name, tmp_path):
    model = hf_model(architecture, hf_config(name))
    model.save_pretrained(tmp_path / "original")
    config, params, _ = modernbert.load_modernbert(tmp_path / "original")
    modernbert.save_modernbert(tmp_path / "exported", config, params,
                               special_token_ids=dict(pad_token_id=0, cls_token_id=1,
                                                      sep_token_id=2, bos_token_id=1,
                                                      eos_token_id=2))
    written = json.loads((tmp_path / "exported" / "config.json").read_text())
    assert written["architectures"] == [architecture]
    mode = (tmp_path / "exported" / "model.safetensors").stat().st_mode & 0o777
    assert mode == (tmp_path / "exported" / "config.json").stat().st_mode & 0o777  # not 0600
    reloaded = getattr(transformers, architecture).from_pretrained(
        tmp_path / "exported", attn_implementation="eager", reference_compile=False).eval()
    ids, _, mask = batch()
    before, after = reference_outputs(model, ids, mask), reference_outputs(reloaded, ids, mask)
    for key in before:
        assert_close_on_real_tokens(after[key], before[key], mask)
    for (key, a), (_, b) in zip(sorted(model.state_dict().items()),
                                sorted(reloaded.state_dict().items())):
        np.testing.assert_array_equal(a.numpy(), b.numpy(), err_msg=key)


def test_export_refuses_what_modernbert_cannot_hold(tmp_path):
    model = hf_model("ModernBertForMaskedLM", hf_config("biasless_every2_window8"))
    model.save_pretrained(tmp_path)
    config, params, _ = modernbert.load_modernbert(tmp_path)
    with pytest.raises(ConfigError, match=r"cannot export to HuggingFace ModernBERT: "
                                          r"position_embedding='alibi'"):
        modernbert.save_modernbert(tmp_path / "out",
                                   dataclasses.replace(config, position_embedding="alibi",
                                                       local_rotary_theta=None), params)


# ----------------------------------------------------------------- loaders: convert, init_from


def test_load_pretrained_and_init_from_take_a_modernbert_dir(tmp_path):
    from bertlab.checkpoints.init_from import resolve_backbone
    from bertlab.text.bpe import BpeTokenizer
    from bertlab.text.tokenizer import Tokenizer
    from test_bpe import build_tokenizer_json

    model = hf_model("ModernBertForSequenceClassification", hf_config("biasless_every2_window8"))
    model.save_pretrained(tmp_path)
    config, params, tokenizer = load_pretrained(tmp_path)
    assert tokenizer is None and set(params) == {"bert", "classifier"}
    build_tokenizer_json(tmp_path / "tokenizer.json")
    backbone = resolve_backbone(str(tmp_path))
    assert backbone.config == config and backbone.vocab_path.endswith("tokenizer.json")
    assert not backbone.lower_case
    ids, segments, mask = batch()
    sequence = BertModel(backbone.config).apply({"params": backbone.params}, ids, segments, mask)[0]
    assert_close_on_real_tokens(sequence, reference_outputs(model, ids, mask)["sequence"], mask)
    # What the fine-tuning loop builds from the backbone's vocabulary path:
    assert isinstance(Tokenizer.from_file(backbone.vocab_path, lower_case=False), BpeTokenizer)


def test_convert_command_round_trip(tmp_path, capsys):
    from bertlab.commands import convert

    model = hf_model("ModernBertForMaskedLM", hf_config("biased_mean_every3_window4"))
    model.save_pretrained(tmp_path / "hf")
    assert convert.main(["--from", "hf", str(tmp_path / "hf"), "--to", "bertlab",
                         str(tmp_path / "ours"), "--check"]) == 0
    assert convert.main(["--from", "bertlab", str(tmp_path / "ours"), "--to", "modernbert",
                         str(tmp_path / "back"), "--check"]) == 0
    reloaded = transformers.ModernBertForMaskedLM.from_pretrained(
        tmp_path / "back", attn_implementation="eager", reference_compile=False).eval()
    ids, _, mask = batch()
    before, after = reference_outputs(model, ids, mask), reference_outputs(reloaded, ids, mask)
    assert_close_on_real_tokens(after["logits"], before["logits"], mask)


def test_a_converted_dir_keeps_its_tokenizer_json_for_init_from(tmp_path):
    """--to bertlab copies tokenizer.json as the export's vocab.txt; init_from reads it back as
    a BPE tokenizer (casing: the file's own)."""
    from bertlab.checkpoints.init_from import resolve_backbone
    from bertlab.commands import convert
    from bertlab.text.bpe import BpeTokenizer, load_tokenizer
    from test_bpe import build_tokenizer_json

    hf_model("ModernBertForMaskedLM", hf_config("biasless_every2_window8", vocab_size=605)
             ).save_pretrained(tmp_path / "hf")
    build_tokenizer_json(tmp_path / "hf" / "tokenizer.json")
    assert convert.main(["--from", "hf", str(tmp_path / "hf"), "--to", "bertlab",
                         str(tmp_path / "ours")]) == 0
    backbone = resolve_backbone(str(tmp_path / "ours"))
    assert backbone.kind == "bertlab" and not backbone.lower_case
    assert isinstance(load_tokenizer(backbone.vocab_path), BpeTokenizer)


# ------------------------------------------------------------- fine-tune and embed end to end


@pytest.mark.slow
def test_finetune_from_a_modernbert_dir_then_predict_and_embed(tmp_path):
    """`bertlab finetune --config.init_from=DIR` on a ModernBERT directory (random MLM weights,
    its own tokenizer.json): a short SST-2 run, then the export predicts what training scored
    and the backbone embeds sentences (about a minute on 2 busy cores; the short version is
    test_load_pretrained_and_init_from_take_a_modernbert_dir)."""
    from bertlab import inference
    from bertlab.checkpoints import init_from
    from bertlab.train import finetune, task_data
    from conftest import shared_path
    from finetune_tables import finetune_configs
    from test_bpe import build_tokenizer_json

    model_dir = tmp_path / "modernbert"
    tokenizer = build_tokenizer_json(tmp_path / "tokenizer.json")
    hf_model("ModernBertForMaskedLM", hf_config("biasless_every2_window8", vocab_size=605,
                                                 pad_token_id=603, cls_token_id=601,
                                                 sep_token_id=602, bos_token_id=601,
                                                 eos_token_id=602)).save_pretrained(model_dir)
    (model_dir / "tokenizer.json").write_bytes(tokenizer.read_bytes())
    config = finetune_configs.get_config("task=sst2")
    config.model.init_from = str(model_dir)
    config.data.data_dir = str(shared_path("data", "glue_data"))
    config.data.max_train_examples, config.data.max_eval_examples = 64, 32
    config.data.max_seq_length, config.data.batch_size, config.train.epochs = 24, 16, 1
    workdir = str(tmp_path / "run")
    summary = finetune.train_and_evaluate(config, workdir)
    assert 0.0 <= summary["eval"]["accuracy"]["median"] <= 1.0
    export = init_from.load_export(f"{workdir}/seed_0/model")
    assert export.config.local_window == 8 and export.config.pooler == "transform"
    model = inference.load_finetuned(workdir)
    metrics, logits = inference.evaluate_split(model, task_data.load_data(config).eval)
    np.testing.assert_allclose(logits, np.load(f"{workdir}/seed_0/eval_logits.npy"), atol=1e-5)
    backbone = init_from.resolve_backbone(str(model_dir))
    vectors = inference.sentence_embeddings(backbone, ["the war is over", "peace at last"])
    assert vectors.shape == (2, 40) and np.isfinite(vectors).all()
