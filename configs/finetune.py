r"""Fine-tuning BERT on one task: `configs/finetune.py:task=NAME[,recipe=R][,variant=V]`.

Run (from the repository root; any key can be overridden, a mistyped key or value is refused):

  # GLUE MRPC from a pretrained checkpoint (HuggingFace dir, Google TF checkpoint, a bertlab
  # pretraining workdir or a bertlab export dir), 3 seeds: median and spread in summary.json
  bertlab finetune --config configs/finetune.py:task=mrpc --workdir runs/mrpc \
      --config.model.init_from=PATH --config.data.data_dir=../shared/data/glue_data \
      --config.train.seeds=0,1,2

  # SNLI, the KerasNLP tutorial recipe (bert_tiny, AdamW + triangular schedule, lr 1e-4,
  # 20 % warm-up, 3 epochs, batch 16; test accuracy reported with the best dev epoch's weights)
  bertlab finetune --config configs/finetune.py:task=snli --workdir runs/snli \
      --config.model.init_from=PATH/bert_tiny --config.data.data_dir=PATH/snli_1.0
  # ... and the tutorial's baseline: plain Adam at a constant 5e-5 for one epoch
  bertlab finetune --config configs/finetune.py:task=snli,recipe=adam --workdir runs/snli_adam \
      --config.model.init_from=PATH/bert_tiny --config.data.data_dir=PATH/snli_1.0

  # IMDB: fine-tune (1 epoch, seq 512), or train the tutorial's 1-layer transformer from scratch
  # with its own 20k WordPiece vocabulary learned on the training reviews
  bertlab finetune --config configs/finetune.py:task=imdb --workdir runs/imdb \
      --config.model.init_from=PATH/bert_tiny --config.data.data_dir=../shared/data/imdb/aclImdb.tar.gz
  bertlab finetune --config configs/finetune.py:task=imdb,recipe=scratch --workdir runs/imdb_scratch \
      --config.data.data_dir=../shared/data/imdb/aclImdb.tar.gz

  # a frozen backbone with two trainable encoder layers on top (the KerasNLP custom-model recipe)
  bertlab finetune --config configs/finetune.py:task=imdb,recipe=frozen --workdir runs/imdb_frozen \
      --config.model.init_from=PATH --config.data.data_dir=../shared/data/imdb/aclImdb.tar.gz

  # any CSV/TSV/JSONL table, e.g. Kaggle's Quora Insincere Questions (one train.csv: dev is a
  # stratified 10 % of it)
  bertlab finetune --config configs/finetune.py:task=csv --workdir runs/quora \
      --config.model.init_from=PATH --config.data.data_dir=quora/train.csv \
      --config.table.text=question_text --config.table.label=target

  # seconds, no downloads: a tiny random BERT with its own vocabulary on the embedded
  # Rotten Tomatoes snippets (what tests and the demo run)
  bertlab finetune --config configs/finetune.py:task=rotten_tomatoes,recipe=quick --workdir runs/rt

Then: `bertlab evaluate --workdir DIR [--split test]` and `bertlab predict --workdir DIR [FILE]`.

The keys are grouped as in configs/pretrain.py: `model` (where the weights come from, sizes),
`data` (splits, lengths, batches, vocabulary), `optimizer`, `train` (seed(s), epochs, the loop),
plus `task` and `table`; `--config.train.seed` and `--config.optimizer.lr` mean the same in both.
A key of the old flat layout (`--config.batch_size=8`) is refused with its new name
(RENAMED_KEYS).

Arguments (comma-separated key=value; a bare word is the task):
  task     a task of bertlab.data.tasks.registry (GLUE names, snli, multinli, imdb, rotten_tomatoes) or
           csv | tsv | jsonl for your own table (columns mapped by the `table` group).
  recipe   default  the per-task row of RECIPES below;
           adam     plain Adam at a constant lr 5e-5, no warm-up, 1 epoch (the tutorials' baseline,
                    and IMDB's default: the KerasNLP guide fine-tunes that way);
           scratch  random init, own vocabulary: the KerasNLP from-scratch model (1 layer,
                    hidden 64, 2 heads, intermediate 128, vocab 20k, 3 epochs);
           frozen   backbone frozen, 2 extra trainable encoder layers + a new pooler on top;
           quick    from scratch, a 1-layer hidden-32 model on 256 examples, seconds (tests).
  variant  the model size row of bertlab.models.VARIANTS used when training from scratch
           (tiny, mini, small, medium, base, large); ignored with init_from.

Fine-tuning controls (issue 16):
  train.select_metric    the eval metric that picks each seed's best epoch (the exported model)
                         and summary.json's best seed: any metric the task reports, `macro_f1` or
                         `matthews` for any classification task (`f1` with two classes), or
                         `loss` (mean unweighted eval loss, lower is better). Default: the task's
                         GLUE metric, MCC for CoLA, F1 for MRPC/QQP, Spearman for STS-B, accuracy
                         elsewhere. Ties: an epoch replaces the best only when strictly better, so
                         on equal values the EARLIER epoch (and the earlier seed) is kept: it got
                         there with fewer updates, the less fitted model at equal quality, and
                         early stopping counts an equal epoch as no gain.
  train.class_weights    "balanced" (n_samples / (n_classes * count_c) on the training split, as
                         scikit-learn) or "1.0,3.0" (one per class id): the loss is
                         sum(w_y * loss) / sum(w_y) over a batch's real examples, torch's
                         CrossEntropyLoss(weight=w) with mean reduction; classification only.
  optimizer.grad_accum_steps  k micro-batches per update; data.batch_size stays the examples per
                         update (divisible by k) and the update is the one-batch update. Packed
                         batches split their rows into k groups of whole examples.
  optimizer.layer_decay  d in (0, 1]: encoder layer l of L (0 = lowest) learns at lr * d^(L - l),
                         the embeddings at lr * d^(L + 1), the pooler, head and extra layers at lr
                         (BEiT, Bao et al. 2022; ELECTRA, Clark et al. 2020, puts one more step
                         below the head). Frozen groups stay frozen.

Recipes per task (RECIPES): Devlin et al. 2019 (section A.3) fine-tune GLUE for 3 epochs at batch
32 and pick lr from {5e-5, 4e-5, 3e-5, 2e-5} on dev; 2e-5 is the common single choice. The small
sets (MRPC 3.7k, RTE 2.5k, STS-B 5.7k, WNLI 0.6k pairs) give only ~100-350 updates in 3 epochs, so
they get 5 (as HuggingFace's run_glue examples and cramming do for them); a small-set run is
noisy, so use several seeds there. SNLI is the KerasNLP "semantic similarity" tutorial (bert_tiny,
lr 1e-4, 20 % warm-up, batch 16, 3 epochs: 79.2 % test); IMDB the KerasNLP getting-started guide
(bert_tiny, Keras' default Adam 5e-5 at a constant rate, 1 epoch, batch 16, seq 512: 86.9 %); csv the Quora insincere-questions
BERT-base recipe (lr 2e-5); rotten_tomatoes, the embedded default mostly tuned from tiny models
here, bert_tiny's 1e-4 and 64 tokens (99.9 % of its snippets fit). Warm-up is 10 % of all updates (run_classifier.py's
warmup_proportion) unless the row says otherwise.
"""

import ml_collections
from ml_collections import config_dict

# task -> (lr, epochs, batch_size, max_seq_length, warmup_fraction). See the docstring for sources.
RECIPES = {
    "cola": (2e-5, 3, 32, 128, 0.1),
    "sst2": (2e-5, 3, 32, 128, 0.1),
    "mrpc": (2e-5, 5, 32, 128, 0.1),
    "stsb": (2e-5, 5, 32, 128, 0.1),
    "qqp": (2e-5, 3, 32, 128, 0.1),
    "mnli": (2e-5, 3, 32, 128, 0.1),
    "mnli-mm": (2e-5, 3, 32, 128, 0.1),
    "qnli": (2e-5, 3, 32, 128, 0.1),
    "rte": (2e-5, 5, 32, 128, 0.1),
    "wnli": (2e-5, 5, 32, 128, 0.1),
    "snli": (1e-4, 3, 16, 128, 0.2),
    "multinli": (2e-5, 3, 32, 128, 0.1),
    "imdb": (5e-5, 1, 16, 512, 0.1),
    "rotten_tomatoes": (1e-4, 3, 32, 64, 0.1),
    "csv": (2e-5, 3, 32, 128, 0.1),
    "tsv": (2e-5, 3, 32, 128, 0.1),
    "jsonl": (2e-5, 3, 32, 128, 0.1),
}

# The split scored every epoch (picks the best epoch) and the split reported once at the end with
# the best weights ("" = none). IMDB has no dev split: the tutorials validate on test.
EVAL_SPLITS = {"imdb": ("test", ""), "snli": ("dev", "test"), "rotten_tomatoes": ("dev", "test")}

RECIPE_NAMES = ("default", "adam", "scratch", "frozen", "quick")
VARIANT_NAMES = ("tiny", "mini", "small", "medium", "base", "large")
_ALIASES = {"sst-2": "sst2", "sts-b": "stsb", "rt": "rotten_tomatoes", "table": "csv"}

# The flat keys of the old layout -> their group; bertlab.config_cli names the new key when an
# override uses an old one.
RENAMED_KEYS = {
    "data_dir": "data.data_dir", "train_split": "data.train_split",
    "eval_split": "data.eval_split", "test_split": "data.test_split",
    "max_train_examples": "data.max_train_examples",
    "max_eval_examples": "data.max_eval_examples", "data_seed": "data.seed",
    "max_seq_length": "data.max_seq_length", "batch_size": "data.batch_size",
    "eval_batch_size": "data.eval_batch_size", "vocab": "data.vocab",
    "vocab_size": "data.vocab_size", "lower_case": "data.lower_case",
    "init_from": "model.init_from", "from_scratch": "model.from_scratch",
    "extra_layers": "model.extra_layers", "freeze_backbone": "train.freeze_backbone",
    "seeds": "train.seeds", "epochs": "train.epochs",
    "early_stopping_patience": "train.early_stopping_patience", "log_every": "train.log_every",
}


def _parse_arg(arg):
    """'task=mrpc,recipe=adam' or 'mrpc' -> {'task': 'mrpc', 'recipe': 'adam'}."""
    values = {"task": "rotten_tomatoes", "recipe": "default", "variant": "tiny"}
    for part in [p.strip() for p in (arg or "").split(",") if p.strip()]:
        key, sep, value = part.partition("=")
        if not sep:
            key, value = "task", key
        key, value = key.strip(), value.strip()
        if key not in values:
            raise ValueError(f"configs/finetune.py: unknown argument {key!r} in {arg!r}; "
                             f"arguments: {', '.join(values)} (e.g. task=mrpc,recipe=adam)")
        values[key] = value
    values["task"] = _ALIASES.get(values["task"].lower(), values["task"].lower())
    if values["task"] not in RECIPES:
        raise ValueError(f"configs/finetune.py: unknown task {values['task']!r}; "
                         f"tasks: {', '.join(RECIPES)}")
    if values["recipe"] not in RECIPE_NAMES:
        raise ValueError(f"configs/finetune.py: unknown recipe {values['recipe']!r}; "
                         f"recipes: {', '.join(RECIPE_NAMES)}")
    if values["variant"] not in VARIANT_NAMES:
        raise ValueError(f"configs/finetune.py: unknown variant {values['variant']!r}; "
                         f"variants: {', '.join(VARIANT_NAMES)}")
    return values


def get_config(arg: str = "task=rotten_tomatoes") -> ml_collections.ConfigDict:
    args = _parse_arg(arg)
    task, recipe = args["task"], args["recipe"]
    lr, epochs, batch_size, max_seq_length, warmup_fraction = RECIPES[task]
    eval_split, test_split = EVAL_SPLITS.get(task, ("dev", ""))
    config = ml_collections.ConfigDict()

    # --- what to learn (the groups below are configs/pretrain.py's: model, data, optimizer, train)
    config.task = task                   # a bertlab.data.tasks.registry name, or csv | tsv | jsonl

    # --- column mapping for task=csv|tsv|jsonl (ignored by the other tasks)
    config.table = table = ml_collections.ConfigDict()
    table.text = "text"                  # column of the (first) text
    table.text_pair = ""                 # column of the second text of a pair task; "" = single
    table.label = "label"                # column of the label
    table.id_column = ""                 # column of a row id (kept for predictions); "" = none
    table.label_names = ""               # comma-separated class names in id order; "" = from data
    table.regression = False             # labels are numbers: one output, MSE loss
    table.dev_fraction = 0.1             # a single file: this stratified part of it is "dev"
    table.skip_unlabelled = False        # drop rows whose label cell is empty (counted) instead of failing

    # --- model: where the weights come from; sizes are read only from_scratch (None keeps the
    # checkpoint's / the variant's value)
    config.model = model = ml_collections.ConfigDict()
    model.init_from = ""                 # pretrained backbone: HF dir, Google TF checkpoint, bertlab
    #                                      pretraining workdir or export dir (with its vocab.txt)
    model.from_scratch = False           # random init + data.vocab, or one learned on train texts
    model.extra_layers = 0               # fresh encoder layers (+ pooler) under the classifier
    model.variant = args["variant"]      # from_scratch: row of bertlab.models.VARIANTS
    model.hidden_size = config_dict.placeholder(int)        # from_scratch: width H
    model.num_layers = config_dict.placeholder(int)         # from_scratch: depth L
    model.num_heads = config_dict.placeholder(int)          # from_scratch: attention heads
    model.intermediate_size = config_dict.placeholder(int)  # from_scratch: feed-forward width
    model.max_position_embeddings = config_dict.placeholder(int)  # from_scratch: position rows
    #                                      (None: max(512, data.max_seq_length))
    model.hidden_dropout = config_dict.placeholder(float)   # dropout on embeddings, sub-layers, head
    model.attention_dropout = config_dict.placeholder(float)  # dropout on attention probabilities
    model.dtype = "float32"              # compute dtype: float32 | bfloat16 (params stay float32)
    model.remat = "none"                 # none | layer | dots: recompute layers in the backward pass
    #                                      (memory for compute; same numbers and parameter names)
    model.dropout_impl = "hash"          # hash | threefry (flax's masks, as runs before it)

    # --- data: the task's splits, tokens per example, batches; the vocabulary keys are
    # configs/pretrain.py's and apply only from_scratch (a pretrained backbone brings its own)
    config.data = data = ml_collections.ConfigDict()
    data.data_dir = ""                   # the task's files ("" = rotten_tomatoes' embedded copy)
    data.train_split = "train"           # split trained on
    data.eval_split = eval_split         # split scored every epoch; picks the best epoch
    data.test_split = test_split         # split scored once with the best weights ("" = none)
    data.max_train_examples = 0          # train on a fixed random subset of this size; 0 = all
    data.max_eval_examples = 0           # score a fixed random subset of eval/test; 0 = all
    data.seed = 0                        # picks those subsets (the same for every train.seed)
    data.max_seq_length = max_seq_length  # tokens per example incl. [CLS]/[SEP]; longer is cut
    data.batch_size = batch_size         # examples per update
    data.eval_batch_size = 64            # examples per evaluation / prediction batch
    data.packing = True                  # packed batches (several examples per row, no [PAD] compute;
    #                                      same examples, order and results up to float rounding);
    #                                      False = every row padded to max_seq_length
    data.packing_programs = 4            # packed training: at most this many row counts (compiled
    #                                      programs); fewer when a compile costs more than it saves
    data.vocab = ""                      # from_scratch: this vocab.txt instead of learning one (e.g. a
    #                                      pretraining's, for a no-pretraining control); "" = learn
    data.vocab_size = 20000              # from_scratch: size of the vocabulary learned there
    data.lower_case = True               # from_scratch: lower-case + strip accents (uncased)

    # --- optimizer: the pretraining keys; warm-up is a fraction of all updates
    # (updates = ceil(train examples / data.batch_size) * train.epochs)
    config.optimizer = opt = ml_collections.ConfigDict()
    opt.name = "adamw"                   # adamw (triangular lr) | bert_adam (original) | adam (constant lr)
    opt.lr = lr                          # peak learning rate
    opt.warmup_fraction = warmup_fraction  # linear warm-up over this fraction of all updates
    opt.weight_decay = 0.01              # decoupled, never on LayerNorm parameters or biases
    opt.b1 = 0.9                         # Adam first-moment decay
    opt.b2 = 0.999                       # Adam second-moment decay
    opt.eps = 1e-6                       # Adam epsilon (the original's 1e-6)
    opt.clip_norm = 1.0                  # clip gradients to this global norm; 0 disables
    opt.grad_accum_steps = 1             # micro-batches per update (data.batch_size, the examples
    #                                      per update, is split k ways: same update, less memory)
    opt.layer_decay = 1.0                # layer-wise lr decay in (0, 1]: encoder layer l of L gets
    #                                      lr * decay^(L - l), embeddings decay^(L + 1), the pooler and
    #                                      head the full lr (BEiT / ELECTRA); 1.0 = off

    # --- train: the loop
    config.train = train = ml_collections.ConfigDict()
    train.seed = 0                       # head init, dropout and batch order of the run
    train.seeds = ()                     # several runs, one per seed, summarised (e.g. 0,1,2);
    #                                      () = the one run of train.seed
    train.epochs = epochs                # passes over the training split
    train.early_stopping_patience = 0    # stop after this many epochs without a better eval
    #                                      metric; 0 = off
    train.freeze_backbone = False        # backbone (params["bert"]) never updated: head only
    train.select_metric = ""             # eval metric that picks the best epoch and seed: any the task
    #                                      reports, macro_f1 / matthews (classification) or loss (lower
    #                                      is better); "" = the task's GLUE metric (CoLA matthews,
    #                                      MRPC/QQP f1, STS-B spearman, else accuracy); a tie keeps
    #                                      the earlier epoch
    train.class_weights = ""             # loss weight per gold class: "" none | balanced (n / (classes
    #                                      * count), from the training split) | 1.0,3.0 (per class id)
    train.log_every = 50                 # steps between train-metric lines in metrics.jsonl

    if recipe == "adam" or (recipe == "default" and task == "imdb"):
        # Keras' Adam(5e-5), what KerasNLP classifiers compile with by default: constant rate,
        # no warm-up, no decay, no clipping, its epsilon.
        opt.name, opt.lr, opt.warmup_fraction = "adam", 5e-5, 0.0
        opt.weight_decay, opt.clip_norm, opt.eps = 0.0, 0.0, 1e-7
        train.epochs = 1
    elif recipe == "scratch":
        # KerasNLP getting-started, "from scratch": a 20k vocabulary learned on the training
        # texts, one encoder layer (hidden 64, 2 heads, feed-forward 128), Keras AdamW(5e-5)
        # (constant rate, weight decay 0.004), 3 epochs. It classifies the first token's vector
        # with one dense layer; we put BERT's pooler (dense + tanh) on [CLS] before that dense.
        model.from_scratch = True
        model.hidden_size, model.num_layers, model.num_heads, model.intermediate_size = 64, 1, 2, 128
        opt.name, opt.lr, opt.warmup_fraction = "adam", 5e-5, 0.0
        opt.weight_decay, opt.clip_norm, opt.eps = 0.004, 0.0, 1e-7
        train.epochs = 3
    elif recipe == "frozen":
        # KerasNLP getting-started, "custom model": backbone.trainable = False, two
        # TransformerEncoder layers (the backbone's heads and feed-forward width) on the sequence
        # output, a dense head on [CLS]; Keras AdamW(5e-5) at a constant rate, 3 epochs.
        train.freeze_backbone = True
        model.extra_layers = 2
        opt.name, opt.lr, opt.warmup_fraction = "adam", 5e-5, 0.0
        opt.weight_decay, opt.clip_norm, opt.eps = 0.004, 0.0, 1e-7
        train.epochs = 3
    elif recipe == "quick":
        model.from_scratch = True
        data.vocab_size = 500
        model.hidden_size, model.num_layers, model.num_heads, model.intermediate_size = 32, 1, 2, 64
        model.max_position_embeddings = 64
        data.max_seq_length = 32
        data.max_train_examples = 256
        data.max_eval_examples = 128
        data.batch_size = 8
        train.epochs = 3
        opt.lr = 3e-3
        train.log_every = 8
    return config
