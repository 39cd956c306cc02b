"""Reloading and using models: the export round trip, init_from resolution, embed / similarity.

The export tests need no training: a randomly initialised classifier is saved, reloaded and must
predict exactly what it predicted before. The embedding tests use the real all-MiniLM-L6-v2
(skipped when ../shared is absent), checked against transformers' BertModel with the same mean
pooling, and on what a sentence-embedding model must get right: a paraphrase is closer than an
unrelated sentence.
"""

import functools
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from bertlab import inference
from bertlab.checkpoints import init_from
from bertlab.train import seeds, steps
from bertlab.checkpoints import training_state as ckpt
from bertlab.commands import embed as embed_cmd
from bertlab.commands import evaluate as evaluate_cmd
from bertlab.commands import predict as predict_cmd
from bertlab.commands import similarity as similarity_cmd
from bertlab.data.tasks.registry import TASKS
from bertlab.train.mesh import data_mesh
from bertlab.models import BertForPreTraining, BertForSequenceClassification, variant_config
from bertlab.models.config import config_to_dict
from bertlab.text.tokenizer import SPECIAL_TOKENS, Tokenizer
from bertlab.train.state import create_train_state

from conftest import shared_path

WORDS = ["the", "a", "good", "bad", "film", "movie", "is", "was", "very", "not", "fun", "dull",
         "Plot", "story", "##s", "##ing", "."]
SENTENCES = ["A man is playing a guitar.", "Someone plays the guitar.",
             "The stock market fell sharply today.", "A woman is slicing an onion."]


pytestmark = pytest.mark.usefixtures("module_compilation_cache")


@pytest.fixture(scope="module")
def vocab_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("vocab") / "vocab.txt"
    path.write_text("\n".join(list(SPECIAL_TOKENS) + WORDS) + "\n")
    return str(path)


@functools.lru_cache(maxsize=None)
def tiny_classifier(vocab_size: int, num_labels: int = 2, extra_layers: int = 0):
    config = variant_config("tiny", hidden_size=16, num_layers=1, num_heads=2,
                            intermediate_size=32, vocab_size=vocab_size,
                            max_position_embeddings=32)
    model = BertForSequenceClassification(config, num_labels=num_labels,
                                          extra_layers=extra_layers)
    ids = jnp.zeros((1, 8), jnp.int32)
    params = jax.jit(lambda key: model.init({"params": key}, ids, ids, ids + 1)["params"])(
        jax.random.PRNGKey(3))
    return config, model, jax.device_get(params)


def save_tiny_export(directory, vocab_file, *, task="sst2", extra_layers=0, meta=None):
    spec = TASKS[task]
    config, model, params = tiny_classifier(23, spec.num_labels, extra_layers)
    init_from.save_export(str(directory), config=config, params=params, vocab_path=vocab_file,
                          lower_case=False, spec=spec, extra_layers=extra_layers,
                          max_seq_length=16, data={"task": task, "data_dir": ""},
                          meta=meta or {"seed": 0, "epoch": 1})
    return config, model, params


# ------------------------------------------------------------------------------------ export


def test_export_round_trip_is_bitwise_and_predicts_the_same(tmp_path, vocab_file):
    config, model, params = save_tiny_export(tmp_path / "model", vocab_file, task="mrpc",
                                             extra_layers=1)
    export = init_from.load_export(str(tmp_path / "model"))
    assert export.config == config and export.extra_layers == 1 and not export.lower_case
    assert export.task_spec() == TASKS["mrpc"]
    before = jax.tree_util.tree_leaves_with_path(params)
    after = dict(jax.tree_util.tree_leaves_with_path(export.params))
    assert len(before) == len(after)
    for path, value in before:
        assert np.asarray(value).dtype == np.asarray(after[path]).dtype
        assert np.asarray(value).tobytes() == np.asarray(after[path]).tobytes(), path

    # The checkpoint package reads it as its own layout (what `bertlab convert` takes).
    from bertlab.checkpoints import load_pretrained

    same_config, same_params, vocab = load_pretrained(str(tmp_path / "model"))
    assert same_config == config and str(vocab) == export.vocab_path
    assert sorted(same_params) == ["bert", "classifier", "head_encoder", "head_pooler"]

    # In memory (never saved) vs reloaded from disk: the same jitted evaluation, same numbers.
    mesh = data_mesh()
    in_memory = inference.FineTuned(
        export=export, spec=TASKS["mrpc"], mesh=mesh,
        tokenizer=Tokenizer.from_file(vocab_file, lower_case=False),
        state=create_train_state(model, optax.identity(),
                                 jax.tree_util.tree_map(jnp.asarray, params), mesh=mesh),
        eval_step=steps.jit_classify_eval_step(mesh=mesh))
    reloaded = inference.load_finetuned(str(tmp_path / "model"))
    texts = ["the good film", "a bad movie", "Plot is fun ."]
    pairs = ["the story was dull", "very good", "not fun"]
    expected = inference.predict_logits(in_memory, texts, pairs)
    np.testing.assert_array_equal(inference.predict_logits(reloaded, texts, pairs), expected)
    assert expected.shape == (3, 2)
    with pytest.raises(ValueError, match="pair task"):
        inference.predict_logits(reloaded, texts)


def test_export_missing_pieces_are_named(tmp_path, vocab_file):
    save_tiny_export(tmp_path / "model", vocab_file)
    os.remove(tmp_path / "model" / "vocab.txt")
    with pytest.raises(init_from.InitFromError, match=r"vocab\.txt: missing; the export"):
        init_from.load_export(str(tmp_path / "model"))
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "config.json").write_text('{"model_type": "bert"}')
    with pytest.raises(init_from.InitFromError, match=r"task\.json: missing; .* not a bertlab "
                                                      r"fine-tuned export"):
        init_from.load_export(str(tmp_path / "other"))


def test_find_export_picks_the_best_seed_or_the_one_asked(tmp_path, vocab_file):
    for seed in (0, 3):
        save_tiny_export(tmp_path / f"seed_{seed}" / "model", vocab_file, meta={"seed": seed})
    with pytest.raises(init_from.InitFromError, match="2 seeds and no summary.json"):
        init_from.find_export(str(tmp_path))
    (tmp_path / "summary.json").write_text(json.dumps({"best_seed": 3}))
    assert init_from.find_export(str(tmp_path)) == str(tmp_path / "seed_3" / "model")
    assert init_from.find_export(str(tmp_path), seed=0) == str(tmp_path / "seed_0" / "model")
    assert init_from.find_export(str(tmp_path / "seed_0")) == str(tmp_path / "seed_0" / "model")
    with pytest.raises(init_from.InitFromError, match="no export for seed 7"):
        init_from.find_export(str(tmp_path), seed=7)
    # a finetune workdir is also a valid init_from: its best seed's backbone
    backbone = init_from.resolve_backbone(str(tmp_path))
    assert backbone.kind == "finetune" and backbone.vocab_path.endswith("seed_3/model/vocab.txt")


def test_commands_report_a_missing_workdir(tmp_path, capsys):
    missing = str(tmp_path / "nothing")
    assert evaluate_cmd.main(["--workdir", missing]) == 2
    assert "nothing: no such file or directory" in capsys.readouterr().err
    assert predict_cmd.main(["--workdir", missing, str(tmp_path / "x.txt")]) == 2
    assert "nothing" in capsys.readouterr().err


# --------------------------------------------------------------------------------- init_from


def test_init_from_a_pretraining_workdir(tmp_path, vocab_file):
    """The layout bertlab pretrain writes: checkpoints/<step>/ (orbax) + vocab.txt."""
    config = variant_config("tiny", hidden_size=16, num_layers=1, num_heads=2,
                            intermediate_size=32, vocab_size=22, max_position_embeddings=32)
    ids = jnp.zeros((1, 8), jnp.int32)
    params = jax.device_get(jax.jit(lambda key: BertForPreTraining(config, with_nsp=False).init(
        {"params": key}, ids, ids, ids + 1)["params"])(jax.random.PRNGKey(5)))
    manager = ckpt.open_manager(str(tmp_path), keep=1, async_save=False)
    ckpt.save(manager, 7, params=params, opt_state={"count": np.zeros((), np.int32)},
              meta={"model": config_to_dict(config), "lower_case": False})
    ckpt.wait(manager)
    manager.close()
    with pytest.raises(init_from.InitFromError, match=r"vocab\.txt: missing"):
        init_from.resolve_backbone(str(tmp_path))
    with open(vocab_file) as f:
        (tmp_path / "vocab.txt").write_text("".join(f.readlines()[:22]))
    backbone = init_from.resolve_backbone(str(tmp_path))
    assert backbone.kind == "pretrain" and backbone.config == config
    assert backbone.lower_case is False  # from the checkpoint meta, not guessed
    for path, value in jax.tree_util.tree_leaves_with_path(params["bert"]):
        got = dict(jax.tree_util.tree_leaves_with_path(backbone.params))[path]
        assert np.asarray(value).tobytes() == np.asarray(got).tobytes()


def test_init_from_unknown_paths_say_what_was_looked_for(tmp_path):
    with pytest.raises(init_from.InitFromError, match="no such file or directory"):
        init_from.resolve_backbone(str(tmp_path / "absent"))
    with pytest.raises(init_from.InitFromError, match="bert_config.json"):
        init_from.resolve_backbone(str(tmp_path))
    (tmp_path / "weights.bin").write_bytes(b"")
    with pytest.raises(init_from.InitFromError, match="no such checkpoint directory"):
        init_from.resolve_backbone(str(tmp_path / "weights.bin"))
    with pytest.raises(init_from.InitFromError, match="init_from is empty"):
        init_from.resolve_backbone("")


def test_init_from_huggingface_needs_its_vocabulary(tmp_path, minilm_dir):
    for name in ("config.json", "model.safetensors"):
        os.symlink(minilm_dir / name, tmp_path / name)
    with pytest.raises(init_from.InitFromError, match=r"no vocab\.txt beside the weights"):
        init_from.resolve_backbone(str(tmp_path))
    backbone = init_from.resolve_backbone(str(minilm_dir))
    assert backbone.kind == "huggingface" and backbone.lower_case  # tokenizer_config.json
    assert (backbone.config.num_layers, backbone.config.hidden_size) == (6, 384)
    assert backbone.params["embeddings"]["word_embeddings"]["embedding"].shape == (30522, 384)


def test_a_collapsed_backbone_is_detected(tmp_path, vocab_file):
    """Every token embedded alike and no positions: every text gets one vector (cosine 1)."""
    config, _, params = tiny_classifier(23)
    bert = jax.tree_util.tree_map(np.array, params["bert"])
    healthy = init_from.Backbone(config, bert, vocab_file, False, "export", "x")
    texts = ["the good film", "a bad movie .", "Plot is fun", "not very dull"]
    assert seeds.backbone_collapse(healthy, texts) < 0.99
    embeddings = bert["embeddings"]
    embeddings["word_embeddings"]["embedding"][:] = embeddings["word_embeddings"]["embedding"][0]
    embeddings["position_embeddings"]["embedding"][:] = 0.0
    collapsed = init_from.Backbone(config, bert, vocab_file, False, "export", "x")
    assert seeds.backbone_collapse(collapsed, texts) > seeds.COLLAPSE_COSINE


# ---------------------------------------------------------------------- embed / similarity


@pytest.fixture(scope="module")
def minilm_embeddings():
    model_dir = shared_path("models", "all-MiniLM-L6-v2")
    backbone = init_from.resolve_backbone(str(model_dir))
    return model_dir, inference.sentence_embeddings(backbone, SENTENCES, normalize=True)


def test_minilm_paraphrase_is_closer_than_unrelated(minilm_embeddings):
    _, vectors = minilm_embeddings
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    cosine = inference.cosine_matrix(vectors)
    assert cosine[0, 1] > 0.7  # measured 0.84: guitar / guitar
    assert cosine[0, 1] > cosine[0, 2] + 0.5 and cosine[0, 1] > cosine[1, 3] + 0.5
    assert abs(cosine[0, 2]) < 0.3  # guitar / stock market: measured -0.05


def test_minilm_embeddings_match_transformers_mean_pooling(minilm_embeddings):
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    model_dir, vectors = minilm_embeddings
    tokenizer = transformers.BertTokenizerFast(str(model_dir / "vocab.txt"), do_lower_case=True)
    model = transformers.BertModel.from_pretrained(str(model_dir)).eval()
    batch = tokenizer(SENTENCES, padding=True, return_tensors="pt")
    with torch.no_grad():
        hidden = model(**batch).last_hidden_state
    mask = batch["attention_mask"].unsqueeze(-1).float()
    reference = ((hidden * mask).sum(1) / mask.sum(1)).numpy()
    reference /= np.linalg.norm(reference, axis=1, keepdims=True)
    np.testing.assert_allclose(vectors, reference, atol=2e-5)


def test_embed_and_similarity_commands(tmp_path, minilm_embeddings, capsys):
    model_dir, vectors = minilm_embeddings
    sentences = tmp_path / "sentences.txt"
    sentences.write_text("\n".join(SENTENCES) + "\n\n")
    out = tmp_path / "emb.npy"
    assert embed_cmd.main(["--model", str(model_dir), str(sentences), "--out", str(out),
                           "--normalize"]) == 0
    saved = np.load(out)
    assert saved.shape == (4, 384) and saved.dtype == np.float32
    np.testing.assert_allclose(saved, vectors, atol=1e-6)
    capsys.readouterr()
    png = tmp_path / "heatmap.png"
    assert similarity_cmd.main(["--model", str(model_dir), str(sentences), "--out", str(png)]) == 0
    printed = capsys.readouterr().out.splitlines()
    assert printed[0].split("\t") == ["", "0", "1", "2", "3"]
    row0 = [float(x) for x in printed[1].split("\t")[1:]]
    np.testing.assert_allclose(row0, inference.cosine_matrix(vectors)[0], atol=1e-3)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    empty = tmp_path / "empty.txt"
    empty.write_text("\n")
    assert embed_cmd.main(["--model", str(model_dir), str(empty)]) == 2
    assert "holds no sentence" in capsys.readouterr().err
