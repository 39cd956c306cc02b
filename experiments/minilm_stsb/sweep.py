"""Reproduction 5 of issue #6: the imported all-MiniLM-L6-v2 as a sentence encoder on STS-B dev,
no fine-tuning.

  bertlab sweep experiments/minilm_stsb     # two commands, about two minutes on 2 CPU cores
  bertlab report experiments/minilm_stsb    # -> experiments/minilm_stsb/results.md

The embeddings are what sentence-transformers computes for this model (its modules.json: a BERT,
mean pooling over the real tokens, L2 normalisation; max_seq_length 256): `bertlab similarity
--task` scores each dev pair by the cosine of its two sentence vectors and correlates those
cosines with the gold scores. tests/test_similarity_task.py checks the cosines against
transformers' BertModel with the same pooling, and the correlations against hand-computed values.
"""


def get_study():
    return {
        "title": "all-MiniLM-L6-v2 sentence embeddings on STS-B dev (no fine-tuning)",
        "description": (
            "Reproduction 5 of issue #6. The all-MiniLM-L6-v2 checkpoint "
            "(`../shared/models/all-MiniLM-L6-v2`, HuggingFace layout, imported by bertlab's own "
            "loader) encodes both sentences of each of the 1,500 STS-B dev pairs "
            "(`../shared/data/glue_data/STS-B/dev.tsv`) the way sentence-transformers does for "
            "this model: mean of the last layer's token vectors over the real tokens, L2 "
            "normalisation, at most 256 tokens. The score of a pair is the cosine of its two "
            "vectors; the table reports the Spearman rank correlation (and Pearson) between those "
            "cosines and the gold 0-5 similarity scores, with no training on STS-B at all.\n\n"
            "Published figure: MTEB's result file for this model "
            "(embeddings-benchmark/results, "
            "`results/sentence-transformers__all-MiniLM-L6-v2/8b3219a92973c328a8e22fadcfa821b5dc75636a/STSBenchmark.json`, "
            "mteb 1.12.75) gives cosine Spearman 82.03 and cosine Pearson 82.74 on the STS "
            "Benchmark **test** split (1,379 pairs). GLUE's STS-B test file has no labels; the "
            "STS Benchmark's own test file (`glue_data/STS-B/original/sts-test.tsv`, the same "
            "1,379 pairs with their gold scores, split `sts-test` of task stsb) has them, so the "
            "second stage scores exactly MTEB's test set: the extra columns compare with 82.03 / "
            "82.74 directly. Deterministic: one arm, one seed (the seed is unused), two stages.\n\n"
            "Outcome: on the test pairs our import and pooling give Spearman 82.03 and Pearson "
            "82.74, MTEB's figures to both decimals it reports; dev (the metric column) is "
            "86.72."),
        "seeds": [0],
        "stages": [
            {"name": "stsb",
             "argv": ["similarity", "--model", "{shared}/models/all-MiniLM-L6-v2",
                      "--task", "stsb", "--data-dir", "{shared}/data/glue_data", "--split", "dev",
                      "--max-seq-length", "256", "--out", "{workdir}/metrics.json"],
             "done": "metrics.json"},
            {"name": "stsb_test",
             "argv": ["similarity", "--model", "{shared}/models/all-MiniLM-L6-v2",
                      "--task", "stsb", "--data-dir", "{shared}/data/glue_data",
                      "--split", "sts-test", "--max-seq-length", "256",
                      "--out", "{workdir}/metrics.json"],
             "done": "metrics.json"},
        ],
        "arms": {"all-MiniLM-L6-v2_mean_pooling": {}},
        "metric": {"name": "STS-B dev Spearman (cosine)", "stage": "stsb", "file": "metrics.json",
                   "path": "spearman", "higher_is_better": True, "scale": 100, "unit": ""},
        "extra_metrics": [
            {"name": "STS-B dev Pearson (cosine)", "stage": "stsb", "file": "metrics.json",
             "path": "pearson", "scale": 100, "unit": ""},
            {"name": "STS-B test Spearman (cosine; MTEB 82.03)", "stage": "stsb_test",
             "file": "metrics.json", "path": "spearman", "scale": 100, "unit": ""},
            {"name": "STS-B test Pearson (cosine; MTEB 82.74)", "stage": "stsb_test",
             "file": "metrics.json", "path": "pearson", "scale": 100, "unit": ""},
        ],
    }
