"""Reproduction 2 of issue #6: the KerasNLP getting-started guide's "pretraining a backbone model"
workflow, masked-LM pretraining of a 2-layer, hidden-128 BERT on the IMDB review text.

  bertlab sweep experiments/imdb_mlm      # export the train/test reviews, then pretrain 3 epochs
  bertlab report experiments/imdb_mlm     # -> experiments/imdb_mlm/results.md
"""

GUIDE = "https://keras.io/guides/keras_nlp/getting_started/"
GUIDE_STEPS = 3 * 1563   # the guide's 3 epochs of 25,000 reviews in batches of 16
EVAL_EVERY = 0           # only after the last update: each pass over the 25,000 test reviews
                         # costs ~9 min of this machine (the guide validates after every epoch)
EVAL_BATCHES = 1563      # all 25,000 test reviews (the last batch of 8 is padded)

DESCRIPTION = f"""\
What: the *pretraining a backbone model* workflow of the KerasNLP guide *Getting Started with
KerasNLP* ({GUIDE}, source `guides/keras_nlp/getting_started.py` in keras-team/keras-io):
masked-LM pretraining (no next-sentence task) of a BERT with 2 layers, hidden 128, 2 heads,
feed-forward 512 (= our `tiny` variant) on the IMDB training reviews, validated on the test
reviews. Issue #6 quotes **18.4 %** masked-token accuracy on validation after the guide's 3
epochs; the revision of the guide read for this study (rendered with Keras 3) shows 10.4 / 12.4 /
14.2 % after epochs 1 / 2 / 3.

Settings against the guide's:

| setting | guide | here |
|---|---|---|
| text | the 25,000 IMDB train reviews, one review per sequence, `<br />` kept | same: `bertlab export-text` writes one document per review, `data.next_sentence=False`, `data.short_seq_prob=0` |
| vocabulary | `bert_tiny_en_uncased`'s (the original uncased BERT vocabulary, 30,522) | `../shared/data/vocab/bert-base-uncased-vocab.txt` (the same file) |
| sequence | `[CLS] review [SEP]`, cut (at the end) / padded to 256 | same length; a long review is cut at both ends at random (create_pretraining_data's rule) |
| masking | each token chosen with probability 0.25, at most 64 per sequence; 80/10/10 | round(0.25 x tokens), at most 64 (`data.mask_rate=0.25`, `data.max_predictions=64`); 80/10/10; drawn afresh every step |
| model | `BertBackbone` 2 x 128, 2 heads, 512, GELU, dropout 0.1; `MaskedLMHead` tied to the embeddings | `configs/pretrain.py:tiny` (same sizes), BERT's MLM head tied to the embeddings; 4,433,210 parameters, the guide's count |
| optimizer | Keras AdamW 5e-4, constant, weight decay 0.004, eps 1e-7, no clipping | `adam` (bias-corrected Adam at a constant rate) 5e-4 + decoupled weight decay 0.004, eps 1e-7, no clipping, no warm-up; LayerNorm parameters and biases are not decayed |
| batch, updates | 16, 3 epochs = {GUIDE_STEPS:,} updates | 16, {GUIDE_STEPS:,} updates (the training examples are the 25,000 reviews, shuffled afresh each epoch) |
| validation | the 25,000 test reviews, masked the same way, after each epoch | the same 25,000 test reviews (`data.eval_corpus`, made into sequences like the training ones), masked by a fixed evaluation seed, once, after the last update (a pass over them costs ~9 minutes here); the masked-token accuracy on the training batches, logged every 50 updates, is the curve |

Metric: `eval_mlm_accuracy` of `final_metrics.json`, the masked-token accuracy on the test
reviews after the last update; the held-out MLM loss and the number of masked tokens scored are
extra columns, and the per-epoch evaluations are in the run's `metrics.jsonl` (quoted below).
The guide's per-epoch wall times were 13-22 s on a GPU; ours is the wall time column (2 CPU cores).

Outcome: **the guide's number is reached.** After the 3 epochs the masked-token accuracy on the
25,000 test reviews is 20.22 % (MLM loss 5.60, 1,289,373 masked tokens scored), against the
issue's 18.4 % and the 14.2 % of the guide's current rendering; the masked accuracy on the
training batches was 18.4 % over the last 50 updates. One seed. The run took 1 h 58 min on the
2 CPU cores (3,300 tokens/s, MFU 24 %; other jobs of ours shared the machine for about a third
of it, and scoring the test reviews took about 10 minutes). It was preempted once on purpose
(SIGTERM at step 201, to change the evaluation schedule) and resumed from its checkpoint.
"""

VOCAB = "{shared}/data/vocab/bert-base-uncased-vocab.txt"


def get_study():
    return {
        "title": "IMDB masked-LM pretraining: the KerasNLP getting-started 2-layer BERT",
        "description": DESCRIPTION,
        "seeds": [0],
        "stages": [
            {"name": "corpus", "per": "study",
             "argv": ["export-text", "--task", "imdb",
                      "--data-dir", "{shared}/data/imdb/aclImdb.tar.gz",
                      "--split", "train", "--output", "{workdir}/imdb_train.txt"],
             "done": "imdb_train.txt"},
            {"name": "test_corpus", "per": "study",
             "argv": ["export-text", "--task", "imdb",
                      "--data-dir", "{shared}/data/imdb/aclImdb.tar.gz",
                      "--split", "test", "--output", "{workdir}/imdb_test.txt"],
             "done": "imdb_test.txt"},
            {"name": "pretrain",
             "argv": ["pretrain", "--config", "configs/pretrain.py:tiny", "--workdir", "{workdir}",
                      "--config.data.corpus={stage:corpus}/imdb_train.txt",
                      f"--config.data.vocab={VOCAB}",
                      "--config.data.max_seq_length=256", "--config.data.batch_size=16",
                      "--config.data.mask_rate=0.25", "--config.data.max_predictions=64",
                      "--config.data.next_sentence=False", "--config.data.short_seq_prob=0.0",
                      "--config.data.eval_corpus={stage:test_corpus}/imdb_test.txt",
                      "--config.optimizer.name=adam", "--config.optimizer.lr=5e-4",
                      "--config.optimizer.warmup_steps=0", "--config.optimizer.weight_decay=0.004",
                      "--config.optimizer.eps=1e-7", "--config.optimizer.clip_norm=0.0",
                      f"--config.train.num_steps={GUIDE_STEPS}",
                      f"--config.train.eval_every={EVAL_EVERY}",
                      f"--config.train.eval_batches={EVAL_BATCHES}",
                      "--config.train.checkpoint_every=500",
                      "--config.train.log_every=50", "--config.train.seed={seed}"],
             "done": "final_metrics.json"},
        ],
        "arms": {"kerasnlp_mlm": {}},
        "metric": {"name": "held-out masked-token accuracy", "stage": "pretrain",
                   "file": "final_metrics.json", "path": "eval_mlm_accuracy",
                   "higher_is_better": True, "scale": 100, "unit": "%"},
        "extra_metrics": [
            {"name": "updates", "stage": "pretrain", "file": "final_metrics.json", "path": "step"},
            {"name": "held-out MLM loss", "stage": "pretrain", "file": "final_metrics.json",
             "path": "eval_mlm_loss"},
            {"name": "masked tokens scored", "stage": "pretrain", "file": "final_metrics.json",
             "path": "eval_masked_tokens"},
            {"name": "train tokens/s", "stage": "pretrain", "file": "final_metrics.json",
             "path": "tokens_per_second"},
        ],
    }
