"""A two-arm example study that runs in seconds: learning rate 1e-3 vs 3e-3 for the tiny
from-scratch Rotten Tomatoes fine-tune (`recipe=quick`), seeds 0 and 1.

  bertlab sweep experiments/example_sweep            # 4 fine-tunes, each a few seconds
  bertlab report experiments/example_sweep           # -> experiments/example_sweep/results.md

tests/test_sweep.py runs it end to end in a temporary runs directory.
"""


def get_study():
    return {
        "title": "Example: learning rate of the quick Rotten Tomatoes fine-tune",
        "description": (
            "The smallest real study: a 1-layer, hidden-32 BERT trained from scratch on 256 "
            "Rotten Tomatoes snippets (`configs/finetune.py:task=rotten_tomatoes,recipe=quick`, "
            "3 epochs, batch 8) with peak learning rate 1e-3 vs 3e-3, two seeds each. It shows "
            "the sweep/report machinery, not a finding: a model this small trained on this "
            "little data stays at the majority class (the same dev accuracy in every run), so "
            "the metric compared is the dev cross-entropy at the best epoch (×100 to show it "
            "with two decimals; lower is better), and 2 seeds cannot separate the arms "
            "(the smallest attainable p is 0.5)."),
        "seeds": [0, 1],
        "stages": [
            {"name": "finetune",
             "argv": ["finetune",
                      "--config", "configs/finetune.py:task=rotten_tomatoes,recipe=quick",
                      "--workdir", "{workdir}", "--config.train.seed={seed}"],
             "done": "summary.json"},
        ],
        "arms": {
            "lr=1e-3": {"finetune": ["--config.optimizer.lr=1e-3"]},
            "lr=3e-3": {"finetune": ["--config.optimizer.lr=3e-3"]},
        },
        "baseline": "lr=3e-3",
        "metric": {"name": "dev loss", "stage": "finetune", "file": "summary.json",
                   "path": "eval.loss.median", "higher_is_better": False, "scale": 100,
                   "unit": "nats ×100"},
        "extra_metrics": [
            {"name": "dev accuracy", "stage": "finetune", "file": "summary.json",
             "path": "eval.accuracy.median", "scale": 100, "unit": "%"},
            {"name": "test accuracy", "stage": "finetune", "file": "summary.json",
             "path": "test.accuracy.median", "scale": 100, "unit": "%"},
        ],
    }
