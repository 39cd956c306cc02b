"""Reproduction 1 of issue #6: the KerasNLP getting-started guide's "build and train your own
transformer from scratch" IMDB classifier.

  bertlab sweep experiments/imdb_scratch      # one fine-tune from scratch (~40 min on 2 busy cores)
  bertlab report experiments/imdb_scratch     # -> experiments/imdb_scratch/results.md
"""

GUIDE = "https://keras.io/guides/keras_nlp/getting_started/"

DESCRIPTION = f"""\
What: the last workflow of the KerasNLP guide *Getting Started with KerasNLP* ({GUIDE}, source
`guides/keras_nlp/getting_started.py` in keras-team/keras-io): a one-layer transformer trained
directly on IMDB sentiment with a WordPiece vocabulary learned on the IMDB training reviews.
Issue #6 quotes **88.2 %** accuracy on the 25,000 test reviews for that model (the guide validates
on the test set; the revision of the guide read for this study, rendered with Keras 3, shows
87.5 % after its third epoch and 87.5 % after its second). Target: match or beat it.

Our run is `configs/finetune.py:task=imdb,recipe=scratch`; its settings against the guide's:

| setting | guide | here |
|---|---|---|
| data | aclImdb train 25,000 / test 25,000 (unsup removed), `<br />` kept | same (`bertlab.data.imdb`, from the archive) |
| vocabulary | 20,000 WordPiece learned on the train reviews, lower-cased, accents stripped | same (`bertlab.vocab.learn_vocab`, 20,000 entries) |
| sequence | `[START] review [END]`, cut/padded to 512 | `[CLS] review [SEP]`, cut/padded to **256** |
| model | token + position embedding (64), 1 post-LN encoder layer: 2 heads, feed-forward 128, ReLU, dropout 0.1 | BERT embeddings (+ segment, LayerNorm), 1 post-LN layer: hidden 64, 2 heads, feed-forward 128, GELU, hidden dropout 0.1 |
| classifier | dense(2) on the first token's vector | BERT pooler (dense + tanh) on `[CLS]`, dropout, dense(2) |
| optimizer | Keras AdamW 5e-5, constant, weight decay 0.004, eps 1e-7, no clipping | same (`adam` + decoupled decay 0.004, no decay on LayerNorm/bias) |
| batch, epochs | 16, 3 (1,563 updates each) | 16, 3 (1,563 updates each) |
| reported | validation (= test) accuracy per epoch | test accuracy of the best of the 3 epochs (`summary.json` `eval.accuracy`) |

Deviations, both for the time budget: (1) **sequences of 256 tokens, not 512** (reviews longer
than 254 WordPieces are cut at the end), and (2) **no dropout
on the attention probabilities** (`--config.model.attention_dropout=0.0`; the guide's encoder
drops them at 0.1; dropout on the sub-layer outputs stays). The full setting was started first and
ran at 1.2 s per update on this 2-core machine while about eight other jobs shared it (3 x 1,563
updates plus three scorings of the 25,000 test reviews: over two hours); in a 50-step probe the
attention dropout alone doubled the update time at 512 tokens (0.8 s vs 0.4 s). Attention cost
grows with the square of the length, so 256 tokens cut it about four-fold; everything else (data,
vocabulary, model, optimizer, batch, epochs) is the guide's. The epoch is picked on the test set,
as the guide's per-epoch validation numbers are.

Outcome: **the target is not met** at this setting: the table's accuracy is below both the
issue's 88.2 % and the 87.5 % of the guide's current rendering. Untested suspects, in the order
we would test them with 512-token runs on a quiet or GPU machine: the 256-token cut (the guide
sees up to twice as much of each long review), the missing attention dropout, and BERT's
initialisation (truncated normal, std 0.02, vs Keras' uniform embeddings and Glorot kernels) at
this small constant rate.

Time per epoch (extra column) = the seed's whole fine-tuning time (3 epochs of training, each
followed by scoring all 25,000 test reviews) / 3, from its `result.json`; vocabulary learning and
tokenisation are outside it but inside the wall time. One seed (0): the budget for this
reproduction was about 45 minutes of a third of 2 CPU cores.
"""


def get_study():
    return {
        "title": "IMDB from scratch: the KerasNLP getting-started 1-layer transformer",
        "description": DESCRIPTION,
        "seeds": [0, 1, 2],
        "stages": [
            {"name": "finetune",
             "argv": ["finetune", "--config", "configs/finetune.py:task=imdb,recipe=scratch",
                      "--workdir", "{workdir}",
                      "--config.data_dir={shared}/data/imdb/aclImdb.tar.gz",
                      "--config.seeds={seed}"],
             "done": "summary.json"},
        ],
        "arms": {"kerasnlp_scratch": {}},
        "metric": {"name": "IMDB test accuracy", "stage": "finetune", "file": "summary.json",
                   "path": "eval.accuracy.median", "higher_is_better": True, "scale": 100,
                   "unit": "%"},
        "extra_metrics": [
            # per_seed.<seed>: the one seed each stage runs
            {"name": "best epoch", "stage": "finetune", "file": "summary.json",
             "path": "per_seed.{seed}.best_epoch"},
            {"name": "time per epoch", "stage": "finetune", "file": "summary.json",
             "path": "per_seed.{seed}.seconds", "scale": 1 / 3, "unit": "s"},
        ],
    }
