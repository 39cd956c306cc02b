"""`bertlab similarity --task`: an embedding model scored on a sentence-pair task, no training.

The correlations are checked against values computed by hand (with ties, where Spearman's average
ranks matter), the pair cosines against transformers' BertModel with sentence-transformers' mean
pooling and L2 normalisation, and the command end to end on a four-pair STS-B file.
"""

import json

import numpy as np
import pytest

from bertlab.checkpoints import init_from
from bertlab.commands import similarity as similarity_cmd

from conftest import shared_path

# (sentence1, sentence2, gold score): a repeated sentence checks that each one is embedded once
# and put back in the right rows.
PAIRS = [("A man is playing a guitar.", "Someone plays the guitar.", 4.6),
         ("A man is playing a guitar.", "The stock market fell sharply today.", 0.0),
         ("A woman is slicing an onion.", "A woman is cutting an onion.", 4.8),
         ("A dog runs across the park.", "A woman is cutting an onion.", 0.4)]

pytestmark = pytest.mark.usefixtures("module_compilation_cache")


def test_correlations_match_hand_computed_values():
    # Monotone but not linear: Spearman 1; Pearson 1.25 / sqrt(0.3875 * 5) = 0.898027.
    result = similarity_cmd.correlations([0.1, 0.2, 0.3, 0.9], [1.0, 2.0, 3.0, 4.0])
    assert result["spearman"] == pytest.approx(1.0)
    assert result["pearson"] == pytest.approx(0.898027, abs=1e-6)
    # Tied gold scores share rank 1.5: ranks (1.5, 1.5, 3, 4) vs (3, 1, 2, 4) give
    # 3 / sqrt(4.5 * 5) = 0.632456.
    result = similarity_cmd.correlations([0.3, 0.1, 0.2, 0.4], [1.0, 1.0, 2.0, 3.0])
    assert result["spearman"] == pytest.approx(0.632456, abs=1e-6)


@pytest.fixture(scope="module")
def minilm():
    model_dir = shared_path("models", "all-MiniLM-L6-v2")
    return model_dir, init_from.resolve_backbone(str(model_dir))


def test_pair_cosines_match_transformers_mean_pooling(minilm):
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    model_dir, backbone = minilm
    first, second = [p[0] for p in PAIRS], [p[1] for p in PAIRS]
    ours = similarity_cmd.pair_cosines(backbone, first, second, batch_size=2)

    tokenizer = transformers.BertTokenizerFast(str(model_dir / "vocab.txt"), do_lower_case=True)
    model = transformers.BertModel.from_pretrained(str(model_dir)).eval()

    def embed(sentences):
        batch = tokenizer(sentences, padding=True, return_tensors="pt")
        with torch.no_grad():
            hidden = model(**batch).last_hidden_state
        mask = batch["attention_mask"].unsqueeze(-1).float()
        vectors = ((hidden * mask).sum(1) / mask.sum(1)).numpy()
        return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)

    reference = np.sum(embed(first) * embed(second), axis=1)
    np.testing.assert_allclose(ours, reference, atol=2e-5)
    assert ours[0] > 0.7 and ours[2] > 0.7 and abs(ours[1]) < 0.3  # paraphrases vs unrelated


def write_stsb_dev(directory):
    folder = directory / "STS-B"
    folder.mkdir(parents=True)
    header = "index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\tsentence1\tsentence2\tscore"
    rows = [f"{i}\tmain-captions\tMSRvid\t2012test\t{i:04d}\tnone\tnone\t{a}\t{b}\t{score:.3f}"
            for i, (a, b, score) in enumerate(PAIRS)]
    (folder / "dev.tsv").write_text("\n".join([header] + rows) + "\n")
    return directory


def test_similarity_task_command_writes_the_metrics(tmp_path, minilm, capsys):
    model_dir, backbone = minilm
    data_dir = write_stsb_dev(tmp_path / "glue_data")
    out = tmp_path / "out" / "metrics.json"
    assert similarity_cmd.main(["--model", str(model_dir), "--task", "stsb", "--data-dir",
                                str(data_dir), "--out", str(out)]) == 0
    assert "Spearman" in capsys.readouterr().out
    metrics = json.loads(out.read_text())
    scores = similarity_cmd.pair_cosines(backbone, [p[0] for p in PAIRS], [p[1] for p in PAIRS])
    expected = similarity_cmd.correlations(scores, [p[2] for p in PAIRS])
    assert metrics["task"] == "stsb" and metrics["split"] == "dev" and metrics["examples"] == 4
    assert metrics["pearson"] == pytest.approx(expected["pearson"], abs=1e-6)
    assert metrics["spearman"] == pytest.approx(expected["spearman"], abs=1e-6)
    assert metrics["spearman"] > 0.7  # paraphrases ranked above unrelated pairs


def test_similarity_task_refusals_name_the_problem(tmp_path, minilm, capsys):
    model_dir, _ = minilm
    data_dir = write_stsb_dev(tmp_path / "glue_data")
    base = ["--model", str(model_dir), "--data-dir", str(data_dir)]
    assert similarity_cmd.main(base + ["--task", "stsb", "sentences.txt"]) == 2
    assert "either FILE or --task" in capsys.readouterr().err
    assert similarity_cmd.main(base + ["--task", "stsb", "--split", "test"]) == 2
    assert "test" in capsys.readouterr().err
