"""Reproduction 2 of issue #6: the KerasNLP getting-started guide's "pretraining a backbone model"
workflow, masked-LM pretraining of a 2-layer, hidden-128 BERT on the IMDB review text.

  bertlab sweep experiments/imdb_mlm      # export the reviews, then pretrain (stops at STOP_AFTER)
  bertlab report experiments/imdb_mlm     # -> experiments/imdb_mlm/results.md
"""

GUIDE = "https://keras.io/guides/keras_nlp/getting_started/"
GUIDE_STEPS = 3 * 1563   # the guide's 3 epochs of 25,000 reviews in batches of 16
STOP_AFTER = 250         # what the time budget of this machine allowed (see the description)
EVAL_EVERY = 125

DESCRIPTION = f"""\
What: the *pretraining a backbone model* workflow of the KerasNLP guide *Getting Started with
KerasNLP* ({GUIDE}, source `guides/keras_nlp/getting_started.py` in keras-team/keras-io):
masked-LM pretraining (no next-sentence task) of a BERT with 2 layers, hidden 128, 2 heads,
feed-forward 512 (= our `tiny` variant) on the IMDB training reviews. Issue #6 quotes **18.4 %**
masked-token accuracy on validation after the guide's 3 epochs; the revision of the guide read for
this study (rendered with Keras 3) shows 10.4 / 12.4 / 14.2 % after epochs 1 / 2 / 3.

Settings against the guide's:

| setting | guide | here |
|---|---|---|
| text | the 25,000 IMDB train reviews, one review per sequence, `<br />` kept | same: `bertlab export-text` writes one document per review, `data.next_sentence=False`, `data.short_seq_prob=0` |
| vocabulary | `bert_tiny_en_uncased`'s (the original uncased BERT vocabulary, 30,522) | `../shared/data/vocab/bert-base-uncased-vocab.txt` (the same file) |
| sequence | `[CLS] review [SEP]`, cut (at the end) / padded to 256 | same length; a long review is cut at both ends at random (create_pretraining_data's rule) |
| masking | each token chosen with probability 0.25, at most 64 per sequence; 80/10/10 | round(0.25 x tokens), at most 64 (`data.mask_rate=0.25`, `data.max_predictions=64`); 80/10/10; drawn afresh every step |
| model | `BertBackbone` 2 x 128, 2 heads, 512, GELU, dropout 0.1; `MaskedLMHead` tied to the embeddings | `configs/pretrain.py:tiny` (same sizes), BERT's MLM head tied to the embeddings; 4,433,210 parameters, the guide's count |
| optimizer | Keras AdamW 5e-4, constant, weight decay 0.004, eps 1e-7, no clipping | `adamw` 5e-4, weight decay 0.004, eps 1e-7, no clipping, no warm-up; the rate decays linearly to 0 at step {GUIDE_STEPS} (our `adamw` has no constant schedule), so it is still {100 * (1 - STOP_AFTER / GUIDE_STEPS):.0f} % of the peak at step {STOP_AFTER} |
| batch, updates | 16, 3 epochs = {GUIDE_STEPS:,} updates | 16, schedule of {GUIDE_STEPS:,} updates, **stopped after {STOP_AFTER:,}** (about {STOP_AFTER * 16 / 24_500:.2f} epoch of the ~24,500 training reviews) |
| validation | the 25,000 test reviews, masked the same way | a random 2 % of the train reviews held out from training (`data.eval_fraction=0.02`, about 500 reviews; masked tokens scored: an extra column), masked the same way |

Deviations: (1) **{STOP_AFTER:,} of the {GUIDE_STEPS:,} updates.** A 60-step probe ran at about
2,000 tokens/s (2 s per update of 16 x 256 tokens) on this 2-core machine shared with other jobs,
so 3 epochs would take about 2.6 hours; the budget left for this reproduction, run after reproduction 1 while about ten other jobs
shared the machine, was about 15 minutes.
`train.stop_after` checkpoints and stops as a preemption would: rerunning the same pretrain
command without `--config.train.stop_after` resumes and finishes the 3 epochs. Compare our number
with the guide's per-epoch curve, not only with its 3-epoch figure. (2) The held-out reviews are
train reviews not trained on, not the test reviews: our pretraining data holds out a random share
of its corpus; IMDB's train and test reviews are from different films but of the same kind.
(3) The linear decay of the rate and the both-ends cut of long reviews, above.

Metric: `eval_mlm_accuracy` of `final_metrics.json`, the masked-token accuracy on the held-out
reviews at the last evaluation (step {STOP_AFTER}); the step and the held-out MLM loss are extra
columns. The guide's per-epoch wall times were 13-22 s on a GPU; ours is the wall time column.

Outcome: **not a reproduction of the guide's number.** {STOP_AFTER} updates are about a sixth of
the guide's first epoch, and the table shows a model still near the start of MLM training (the
guide's own first-epoch average training accuracy was 5.7 %). What the run does show is that the setting matches the guide's (same
vocabulary, sizes, parameter count, masking budget, optimizer) and that it runs end to end from
the IMDB archive with two commands; finishing it is the same pretrain command without
`--config.train.stop_after` (it resumes from the checkpoint at step {STOP_AFTER}), which at the
tokens/s in the table is a few hours of this machine or minutes of a GPU.
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
            {"name": "pretrain",
             "argv": ["pretrain", "--config", "configs/pretrain.py:tiny", "--workdir", "{workdir}",
                      "--config.data.corpus={stage:corpus}/imdb_train.txt",
                      f"--config.data.vocab={VOCAB}",
                      "--config.data.max_seq_length=256", "--config.data.batch_size=16",
                      "--config.data.mask_rate=0.25", "--config.data.max_predictions=64",
                      "--config.data.next_sentence=False", "--config.data.short_seq_prob=0.0",
                      "--config.data.eval_fraction=0.02",
                      "--config.optimizer.name=adamw", "--config.optimizer.lr=5e-4",
                      "--config.optimizer.warmup_steps=0", "--config.optimizer.weight_decay=0.004",
                      "--config.optimizer.eps=1e-7", "--config.optimizer.clip_norm=0.0",
                      f"--config.train.num_steps={GUIDE_STEPS}",
                      f"--config.train.stop_after={STOP_AFTER}",
                      f"--config.train.eval_every={EVAL_EVERY}", "--config.train.eval_batches=40",
                      f"--config.train.checkpoint_every={EVAL_EVERY}",
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
