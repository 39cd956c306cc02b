"""Reproduction 4 of issue #6: the fine-tuning recipe comparison of the KerasNLP SNLI tutorial
("Semantic Similarity with KerasNLP"), on GLUE MRPC with all-MiniLM-L6-v2, 3 seeds per recipe.

  bertlab sweep experiments/mrpc_recipes --dry-run   # the 6 fine-tune commands
  bertlab sweep experiments/mrpc_recipes             # runs them (resumable; about an hour on 2 shared CPU cores)
  bertlab report experiments/mrpc_recipes            # -> experiments/mrpc_recipes/results.md

Both arms: batch 16 (the tutorial's), the same backbone and data, dev accuracy/F1 of the epoch
with the best dev accuracy + F1 mean (bertlab finetune's checkpoint choice). MAX_SEQ_LENGTH is
explained in the description below.
"""

# Longest MRPC pair in MiniLM's WordPiece, [CLS]/[SEP]s included: 103 tokens (train), 86 (dev);
# 88 cuts 12 of the 3,668 training pairs (82 tokens in all) and no dev pair. See the description.
MAX_SEQ_LENGTH = 88
# Training pairs: a fixed random subset (data_seed 0, the same for every arm and seed), because
# the full set does not fit this machine's budget. See the description.
TRAIN_EXAMPLES = 448

COMMON = ["--config.train.seed={seed}",
          "--config.model.init_from={shared}/models/all-MiniLM-L6-v2",
          "--config.data.data_dir={shared}/data/glue_data",
          "--config.data.batch_size=16", f"--config.data.max_seq_length={MAX_SEQ_LENGTH}",
          f"--config.data.max_train_examples={TRAIN_EXAMPLES}"]


def get_study():
    return {
        "title": "Fine-tuning recipes of the KerasNLP SNLI tutorial on MRPC, all-MiniLM-L6-v2",
        "description": (
            "Reproduction 4 of issue #6: the two fine-tuning recipes of the KerasNLP tutorial "
            "*Semantic Similarity with KerasNLP* (keras-io `examples/nlp/semantic_similarity_with_keras_nlp.py`), "
            "same model, 3 seeds each, compared with paired statistics.\n\n"
            "- **adam** (the tutorial's baseline, `configs/finetune.py:task=mrpc,recipe=adam`): "
            "Keras `Adam(5e-5)` at a constant rate (epsilon 1e-7, no warm-up, no clipping, no "
            "weight decay), 1 epoch.\n"
            "- **adamw_triangular** (the tutorial's improvement): Keras `AdamW` (weight decay "
            "0.004, epsilon 1e-7, no clipping) with its `TriangularSchedule`: peak 1e-4, linear "
            "warm-up over the first 20 % of all updates, then linear decay to 0; 3 epochs. "
            "bertlab's `adamw` is optax Adam + decoupled decay on the same schedule; unlike "
            "Keras it does not decay LayerNorm parameters and biases (0.004 x 1e-4 per step: "
            "negligible).\n\n"
            "Both at batch 16, the tutorial's. The tutorial reports, on SNLI with bert_tiny "
            "(2 layers, hidden 128) trained on 20 % of SNLI train: Adam 5e-5, 1 epoch -> 76.9 % "
            "test accuracy; AdamW + triangular, 3 epochs -> 79.2 % validation, 78.9 % test (one "
            "run each, no seeds). Two things differ here, by necessity: SNLI's training split is "
            "not in `../shared` (only dev/test), so the task is GLUE MRPC (3,668 train / 408 dev "
            "sentence pairs, paraphrase or not), and the only pretrained BERT-architecture "
            "checkpoint here is all-MiniLM-L6-v2 (6 layers, hidden 384; a sentence encoder "
            "distilled from MiniLM and trained contrastively on 1 B sentence pairs), which both "
            "arms start from. The question reproduced is the tutorial's: does warm-up + decay "
            "at a 2x peak rate over 3 epochs beat one epoch of constant-rate Adam?\n\n"
            "**Budget: what we cut, and why.** Measured at the start of this run, one MiniLM "
            "train step (batch 16, 96 tokens) took about 8 s: six agents were sharing this "
            "machine's 2 CPU cores, and our process got about 40 % of one. The full recipe "
            "(3 seeds x (1 + 3) epochs of 230 steps, plus 12 dev evaluations) would have taken "
            "about 6 hours against a budget of 80 minutes (measured again later with one core "
            "to itself: ~2.5 s per step, so the full set is ~2 hours of this machine; setting "
            "TRAIN_EXAMPLES = 0 at the top of sweep.py runs it). Seeds (3) and recipes are kept as "
            "they are; what is cut is (1) the training set: a fixed random subset of "
            f"{TRAIN_EXAMPLES} of MRPC's 3,668 training pairs (`max_train_examples`, data_seed 0: "
            "the same pairs for every arm and seed), so an epoch is "
            f"{-(-TRAIN_EXAMPLES // 16)} updates of 16 (the tutorial, too, trains on a 20 % "
            "subset of SNLI); the full 408-pair dev set is scored; and (2) the sequence length: "
            "the tutorial packs at 512 (BertClassifier's default) and our fine-tuner pads every "
            f"batch to max_seq_length; we pack at {MAX_SEQ_LENGTH}. The longest MRPC pair is "
            "103 WordPiece tokens in MiniLM's vocabulary ([CLS]/[SEP] included; 99th percentile "
            f"83, mean 53), so at {MAX_SEQ_LENGTH} only 12 of the 3,668 training pairs lose "
            "tokens (82 in all, from the longer sentence's end, as BERT truncates) and no dev "
            "pair does (dev's longest is 86). Absolute accuracies are therefore below what "
            "the full training set gives; the comparison of the two recipes at equal data is "
            "what this table measures. The runs were made with "
            "`XLA_FLAGS='--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1'` "
            "(one compute thread: on an oversubscribed machine a 2-thread step waits for its "
            "slower half); it changes speed (and float summation order at most), not the recipe.\n\n"
            "Score: dev accuracy (F1 of the 'equivalent' class as an extra column) of each seed's "
            "best epoch by dev accuracy + F1 mean, as `bertlab finetune` selects it; with 1 "
            "epoch that is the final model, with 3 it is the best of 3 dev evaluations, which "
            "favours the 3-epoch arm slightly (the tutorial reports final weights; each epoch's "
            "dev numbers are in the runs' metrics.jsonl). GLUE's MRPC test labels are not public, "
            "so there is no test column."),
        "seeds": [0, 1, 2],
        "stages": [
            {"name": "finetune",
             # each arm names its recipe (the config argument) first
             "argv": ["finetune", "--workdir", "{workdir}"],
             "done": "summary.json"},
        ],
        "arms": {
            "adam": {"finetune": ["--config", "configs/finetune.py:task=mrpc,recipe=adam"]
                     + COMMON},
            "adamw_triangular": {"finetune": [
                "--config", "configs/finetune.py:task=mrpc", "--config.optimizer.name=adamw", "--config.optimizer.lr=1e-4",
                "--config.optimizer.warmup_fraction=0.2", "--config.train.epochs=3",
                "--config.optimizer.weight_decay=0.004", "--config.optimizer.eps=1e-7",
                "--config.optimizer.clip_norm=0"] + COMMON},
        },
        "baseline": "adam",
        "metric": {"name": "MRPC dev accuracy", "stage": "finetune", "file": "summary.json",
                   "path": "eval.accuracy.median", "higher_is_better": True, "scale": 100,
                   "unit": "%"},
        "extra_metrics": [
            {"name": "MRPC dev F1", "stage": "finetune", "file": "summary.json",
             "path": "eval.f1.median", "scale": 100, "unit": "%"},
        ],
    }
