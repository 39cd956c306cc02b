r"""Masked-LM pretraining of BERT: one config, picked by recipe and variant.

Run (from the repository root; any key can be overridden, a mistyped key or value is refused):

  # seconds: a smoke test on your own small text file (learns a 300-piece vocabulary)
  bertlab pretrain --config configs/pretrain.py:quick --workdir runs/quick \
      --config.data.corpus=path/to/some.txt

  # what `make demo` runs: a tiny BERT on the State of the Union corpus, ~4 minutes on 2 CPU cores
  bertlab pretrain --config configs/pretrain.py:demo --workdir runs/demo

  # the same for 100 steps (~1 minute): steps=N keeps the recipe, scales its warm-up and its
  # log / evaluation / checkpoint cadence to N
  bertlab pretrain --config configs/pretrain.py:demo,steps=100 --workdir runs/demo100

  # a recipe preset is the whole command (the embedded `default` corpus, from the demo extra)
  bertlab pretrain --config configs/pretrain.py:cramming --workdir runs/c
  # ... at another size, or for a 10-minute time budget
  bertlab pretrain --config configs/pretrain.py:cramming,variant=tiny,minutes=10 --workdir runs/ct

  # the paper recipes (Devlin et al. 2019; Turc et al. 2019 for tiny..medium), e.g. BERT-base on
  # your corpus with Google's uncased vocabulary:
  bertlab pretrain --config configs/pretrain.py:base --workdir runs/base \
      --config.data.corpus=corpus/ --config.data.vocab=bert-base-uncased-vocab.txt

  # an ablation: pre-LN tiny BERT with a higher peak learning rate
  bertlab pretrain --config configs/pretrain.py:tiny --workdir runs/tiny_preln \
      --config.model.pre_ln=True --config.optimizer.lr=5e-4

The argument is `NAME[,variant=V][,steps=N][,minutes=M]`. NAME is a recipe or a variant:

Recipes (each RECIPES entry below cites its source and says what it does not reproduce):
  bert        the original BERT (Devlin et al. 2019): post-LN, learned positions, NSP, bert_adam
  roberta     RoBERTa (Liu et al. 2019): no NSP, full-length sequences, 8k batches
  cramming    cramming (Geiping & Goldstein 2022): pre-LN, GeGLU, no biases, scaled sinusoidal,
              25 % masking, a triangle over a one-day time budget, batch ramp, clipping 0.5
  mosaicbert  MosaicBERT (Portes et al. 2023): ALiBi, GeGLU, 30 % masking, 6 % warm-up, vocab
              padded to 64, evaluation at 15 % masking
  modernbert  ModernBERT (Warner et al. 2024): rotary 160k/10k, GeGLU, bias-free pre-LN,
              global attention every 3rd layer and 128-token windows elsewhere, 30 % masking
A recipe is built at variant=base unless told; on the default corpus (sotu) each learns an 8k
vocabulary (set data.vocab_size or data.vocab for your corpus).
Variants: tiny, mini, small, medium, base, large (model sizes from bertlab.models.VARIANTS, the
bert recipe), quick (seconds, for tests) and demo (minutes on a laptop CPU).
steps=N trains N updates (warm-up in proportion); minutes=M sets train.budget_minutes.
Rerunning the same command resumes from the last checkpoint in --workdir.
"""

from typing import Any, NamedTuple

import ml_collections
from ml_collections import config_dict

PAPER_VARIANTS = ("tiny", "mini", "small", "medium", "base", "large")
VARIANTS = PAPER_VARIANTS + ("quick", "demo")


def variant_config(variant: str) -> ml_collections.ConfigDict:
    """The original BERT recipe (the `bert` preset) at one variant: every key, commented."""
    config = ml_collections.ConfigDict()

    # --- model: the VARIANTS row plus every ablation knob of bertlab.models.BertConfig.
    # The vocabulary size is not a key: it is the size of the vocabulary the data was made with.
    config.model = model = ml_collections.ConfigDict()
    model.variant = variant if variant in PAPER_VARIANTS else "tiny"  # row of VARIANTS for sizes
    model.hidden_size = config_dict.placeholder(int)        # None: the variant's width H
    model.num_layers = config_dict.placeholder(int)         # None: the variant's depth L
    model.num_heads = config_dict.placeholder(int)          # None: the variant's heads (H / 64)
    model.intermediate_size = config_dict.placeholder(int)  # None: the variant's feed-forward (4H)
    model.max_position_embeddings = 512  # rows of the position table (>= data.max_seq_length)
    model.type_vocab_size = 2            # segment ids (A / B)
    model.hidden_dropout = 0.1           # dropout on embeddings and sub-layer outputs
    model.attention_dropout = 0.1        # dropout on attention probabilities
    model.layer_norm_eps = 1e-12         # the original's LayerNorm epsilon
    model.initializer_range = 0.02       # stddev of the truncated-normal initialiser
    model.activation = "gelu"            # gelu (exact erf) | gelu_tanh | relu | geglu
    model.position_embedding = "learned"  # learned | sinusoidal | rotary | none
    model.pre_ln = False                 # True: LayerNorm before each sub-layer (pre-LN)
    model.tie_embeddings = True          # MLM decoder reuses the word-embedding table
    model.dtype = "float32"              # compute dtype: float32 | bfloat16 (params stay float32)
    model.attention_kernel = "explicit"  # explicit | fused | auto (fused: cuDNN on GPU, no attn dropout)
    model.remat = "none"                 # none | layer | dots: recompute layers in the backward pass
    model.dropout_impl = "hash"          # hash | threefry (flax's masks, as runs before it)
    # recipe knobs (defaults: the original BERT; the README's knob table says which recipe sets what)
    model.norm = "layernorm"             # layernorm | rmsnorm (needs norm_bias=False)
    model.norm_bias = True               # LayerNorm's learned shift
    model.attention_bias = True          # bias of the q/k/v and attention-output projections
    model.mlp_bias = True                # bias of the feed-forward projections
    model.head_bias = True               # bias of the pooler's and MLM transform's dense layer
    model.decoder_bias = True            # the MLM output bias over the vocabulary
    model.embedding_norm = True          # the norm after the embedding sum
    model.first_layer_attention_norm = True  # pre-LN only: False skips layer 0's attention norm
    model.local_window = 0               # sliding-window width of local layers; 0: all global
    model.global_every = 1               # layer i is global when i % global_every == 0
    model.rotary_theta = 10000.0         # rotary base (position_embedding="rotary")
    model.local_rotary_theta = config_dict.placeholder(float)  # local layers' base; None: rotary_theta
    model.vocab_pad_multiple = 1         # embedding/decoder rows rounded up to this multiple
    model.pooler = "tanh"                # tanh (BERT) | transform (dense -> activation -> norm)
    model.classifier_pooling = "cls"     # what the pooler reads: cls | mean of the real tokens
    model.head_activation = ""           # MLM transform / transform pooler; "": the ungated activation
    model.head_transform = True          # False: the MLM decoder reads the encoder output directly

    # --- data: raw text -> vocabulary -> shards on disk -> masked batches (masking is per step).
    config.data = data = ml_collections.ConfigDict()
    data.corpus = "default"       # comma-separated files, dirs (*.txt) or globs; "default": sotu
    data.vocab = ""               # vocab.txt to use; empty: learn one of vocab_size in the workdir
    data.vocab_size = 30522       # size of the learned vocabulary (ignored when data.vocab is set)
    data.lower_case = True        # lower-case and strip accents (uncased BERT)
    data.prepared = ""            # shards made by `bertlab create-data`; empty: create workdir/data
    data.max_seq_length = 128     # tokens per example, [CLS]/[SEP] included (T)
    data.batch_size = 256         # sequences per optimizer update, over all devices and hosts
    data.mask_rate = 0.15         # fraction of real tokens predicted (80/10/10 corruption)
    data.eval_mask_rate = 0.0     # masking rate of evaluation (MosaicBERT: 0.15 whatever the
                                  # training rate, so runs compare); 0: data.mask_rate
    data.max_predictions = 20     # masked positions per sequence (P), the original's 20 at T=128
    data.whole_word = False       # mask all WordPieces of a word together
    data.next_sentence = True     # make sentence pairs with 50 % random B and train the NSP head
    data.short_seq_prob = 0.1     # fraction of examples cut shorter than max_seq_length
    data.eval_fraction = 0.01     # documents held out for evaluation
    data.eval_corpus = ""         # files scored instead (e.g. a test set): then the whole corpus
                                  # is trained on and eval_fraction is not used; "" = hold out
    data.doc_boundary = "blank"   # what ends a document: "blank" line (and end of file) | "file"
    data.seed = 12345             # data creation and the order of training batches
    data.tokenize_on_device = False  # True: read the shards' raw segment texts and tokenise them
                                  # in the jitted step (tokenizer_jax); needs create-data --raw-text
    data.packing = True           # pack the short examples (short_seq_prob, document ends) into
                                  # shared rows, train and eval (bertlab.data.pretraining.packed):
                                  # the same examples per update, masked exactly as padded, without
                                  # computing on [PAD]; False: padded rows. On by default: the
                                  # same losses (dropout off, tested) and faster on real data
                                  # (experiments/bench/pretrain_packing.md: 1.1-1.2x on sotu,
                                  # 1.4-1.5x on WikiText-2). Batches stay padded with
                                  # tokenize_on_device (the ids exist only on the device)
    data.packing_programs = 3     # planned row counts per micro-batch (compiled programs), plus
                                  # one that always fits, compiled only if a batch needs it

    # --- optimizer: `bert_adam` is the original (no bias correction, warm-up replacing a decay
    # over all steps); `adamw` is optax's Adam with the triangular schedule (decay over T - W);
    # `adam` is Adam at a constant rate after the warm-up (the KerasNLP guides' fixed-rate AdamW).
    config.optimizer = opt = ml_collections.ConfigDict()
    opt.name = "bert_adam"        # bert_adam | adamw | adam
    opt.lr = 1e-4                 # peak learning rate
    opt.warmup_steps = 10_000     # linear warm-up from 0 (W)
    opt.warmup_fraction = 0.0     # > 0: the warm-up as a fraction of training (of train.num_steps,
                                  # or of the time budget), replacing warmup_steps; with a
                                  # budget and 0: warmup_steps / num_steps of the budget
    opt.warmup_from = 0.0         # time budget only: the rate at the start as a fraction of the
                                  # peak (cramming's triangle rises from 0.25 x peak)
    opt.weight_decay = 0.01       # decoupled, never on LayerNorm parameters or biases
    opt.b1 = 0.9                  # Adam first-moment decay
    opt.b2 = 0.999                # Adam second-moment decay
    opt.eps = 1e-6                # Adam epsilon (the original's 1e-6)
    opt.clip_norm = 1.0           # clip gradients to this global norm; 0 disables
    opt.grad_accum_steps = 1      # micro-batches per update (data.batch_size is split k ways)

    # --- train: the loop.
    config.train = train = ml_collections.ConfigDict()
    train.num_steps = 1_000_000   # optimizer updates (T); with a time budget, at most this many
    train.budget_minutes = 0.0    # > 0: training ends after this much TRAINING time (compilation,
                                  # evaluations and saves excluded) and the learning rate follows
                                  # elapsed / budget (bertlab.train.budget); resumes continue it
    train.budget_clock = "wall"   # the budget's clock: "wall", or "cpu" (process CPU seconds: fair
                                  # between runs pinned to one core each on a shared machine)
    train.batch_ramp = 0.0        # > 0: the update grows linearly from one micro-batch (data.
                                  # batch_size / optimizer.grad_accum_steps) to data.batch_size
                                  # over this fraction of training (of steps, or of the budget)
    train.seed = 0                # parameter init, dropout and masking
    train.log_every = 100         # steps between metric lines (and the NaN check)
    train.eval_every = 10_000     # steps between evaluations on the held-out split; 0: only at end
    train.eval_batches = 50       # held-out batches per evaluation (fewer if the split is
                                  # smaller); 0: no evaluation
    train.checkpoint_every = 10_000  # steps between checkpoints (one is always written at the end)
    train.keep_checkpoints = 3    # most recent checkpoints kept
    train.peak_flops = 0.0        # FLOP/s of one device for MFU; 0: measure a float32 matmul once
    train.distributed = False     # call jax.distributed.initialize() (multi-host; see README)
    train.stop_after = 0          # checkpoint and exit after this step as if preempted; 0: never
    train.extend = False          # resume with another num_steps (reshapes the lr schedule); refused otherwise

    apply(config, VARIANT_CHANGES.get(variant, {}))
    return config


def apply(config: ml_collections.ConfigDict, changes: dict[str, dict[str, Any]]) -> None:
    """Sets a table of differences, {group: {key: value}}. A key the config does not declare is
    refused here, where a typo in a table would otherwise add a key that nothing reads."""
    for group, values in changes.items():
        for key, value in values.items():
            if key not in config[group]:
                raise KeyError(f"configs/pretrain.py: {group}.{key} in a preset table is not a key "
                               "of variant_config")
            config[group][key] = value


# quick and demo: the tiny row of VARIANTS, changed where these differ.
VARIANT_CHANGES = {
    "quick": {  # seconds, for tests
        "model": dict(hidden_size=32, num_layers=2, num_heads=2, intermediate_size=64,
                      max_position_embeddings=64),
        "data": dict(vocab_size=300, max_seq_length=32, batch_size=8, max_predictions=5,
                     next_sentence=False, eval_fraction=0.1),
        "optimizer": dict(lr=1e-3, warmup_steps=2),
        "train": dict(num_steps=20, log_every=5, eval_every=10, eval_batches=2,
                      checkpoint_every=10, keep_checkpoints=2),
    },
    # tiny BERT (L2/H128) on sotu with its own 8k vocabulary: ~30 s of vocabulary learning and
    # data creation, then ~3 minutes of training (400 steps of 4,096 tokens) on 2 CPU cores.
    "demo": {
        "data": dict(
            vocab_size=8000, batch_size=32, next_sentence=False, eval_fraction=0.02,
            doc_boundary="file",   # sotu: one speech per file, blank lines between paragraphs
            # 40 % masking, the best arm of experiments/ablation_mask_ln at a small budget
            # (Wettig et al. 2023): more predictions per step. Measured on the demo's 400 steps
            # and its Rotten Tomatoes fine-tune: 15 % -> eval MLM loss 6.31, dev accuracy 57.8 %
            # after 1 epoch (near the majority class); 40 % -> 6.20, 66.9 % after 1 epoch, 72.6 %
            # after 3 (demo.sh now runs 3). max_predictions >= 0.4 x 128, so no sequence is capped.
            mask_rate=0.4, max_predictions=52),
        # In a run this short, bias-corrected AdamW leaves the unigram plateau (eval MLM loss
        # ~6.5) and bert_adam does not (measured: lr 2e-3 adamw 6.34 at step 300; bert_adam 5e-3
        # 6.51).
        "optimizer": dict(name="adamw", lr=2e-3, warmup_steps=40),
        "train": dict(num_steps=400, log_every=20, eval_every=100, eval_batches=10,
                      checkpoint_every=200),
    },
}


# --------------------------------------------------------------------------------------------
# Recipes: each is its source and a table of where that source differs from the `bert` config
# (variant_config), applied on top of the chosen variant.
# --------------------------------------------------------------------------------------------

class Recipe(NamedTuple):
    source: str                          # the paper, its section, and what is not reproduced
    changes: dict[str, dict[str, Any]]   # {config group: {key: value}}, set by apply()


# No bias anywhere: q/k/v and output projections, feed-forward, heads, decoder, norms.
NO_BIASES = dict(norm_bias=False, attention_bias=False, mlp_bias=False, head_bias=False,
                 decoder_bias=False)
# The default corpus (sotu, ~2 M words) learns an 8k vocabulary, as the demo; with your corpus set
# data.vocab_size (or data.vocab) to the recipe's (noted in each recipe's source). sotu has one
# speech per file, blank lines between paragraphs.
SMALL_CORPUS_VOCAB = dict(vocab_size=8000, doc_boundary="file")

BERT = Recipe(
    source="""the original BERT (Devlin et al. 2019, "BERT: Pre-training of Deep Bidirectional
    Transformers for Language Understanding"; Turc et al. 2019 for tiny..medium): variant_config
    as it is.""",
    changes={})

ROBERTA = Recipe(
    source="""RoBERTa (Liu et al. 2019, "RoBERTa: A Robustly Optimized BERT Pretraining Approach",
    Section 4 and Table 9 (base)): no NSP, dynamic masking (bertlab masks every step anew
    already), full-length sequences (FULL-SENTENCES: short_seq_prob 0, and documents are whole
    files here, so a sequence runs across paragraphs; crossing a file boundary is not
    implemented), larger batches (8k sequences of 512, peak lr 6e-4, 24k warm-up of 500k
    steps, Adam b2 0.98, eps 1e-6, weight decay 0.01). Vocabulary: byte-level BPE of 50k in the
    paper; WordPiece here.""",
    changes={
        "data": dict(SMALL_CORPUS_VOCAB, next_sentence=False, short_seq_prob=0.0,
                     max_seq_length=512,
                     max_predictions=77,        # 0.15 x 512
                     batch_size=8192),
        "optimizer": dict(grad_accum_steps=32,  # micro-batches of 256
                          name="adamw", lr=6e-4, b2=0.98, eps=1e-6, warmup_steps=24_000),
        "train": dict(num_steps=500_000),
    })

CRAMMING = Recipe(
    source="""cramming (Geiping & Goldstein 2022, "Cramming: Training a Language Model on a
    Single GPU in One Day", Section 4; their bert-o4 training config): pre-norm with a final
    norm, gated GELU feed-forward, no bias terms anywhere (q/k/v included), tied embeddings, MLM
    only on the masked tokens (bertlab's decoder reads the gathered positions anyway) and no head
    transform (skip_head_transform), scaled sinusoidal positions, sequence length 128, no
    dropout, 25 % masking, no NSP; AdamW (b2 0.98, eps 1e-12, weight decay 0.01) at a peak of
    1e-3 on a triangle over the time budget (budget-triangle2: from 0.25 x peak up to the peak
    at 75 % of the budget, then down to 0), one day of training, the batch ramped up to 8192
    sequences over 60 % of the budget, gradient clipping 0.5. Vocabulary: 32768 WordPiece in
    the paper.""",
    changes={
        "model": dict(NO_BIASES, pre_ln=True, activation="geglu", tie_embeddings=True,
                      head_transform=False, position_embedding="scaled_sinusoidal",
                      hidden_dropout=0.0, attention_dropout=0.0),
        "data": dict(SMALL_CORPUS_VOCAB, max_seq_length=128, mask_rate=0.25,
                     max_predictions=32,        # 0.25 x 128
                     next_sentence=False, batch_size=8192),
        "optimizer": dict(grad_accum_steps=64,  # micro-batches of 128, the ramp's step
                          name="adamw", lr=1e-3, b2=0.98, eps=1e-12, weight_decay=0.01,
                          clip_norm=0.5, warmup_fraction=0.75, warmup_from=0.25),
        "train": dict(budget_minutes=24 * 60.0, batch_ramp=0.6,
                      num_steps=1_000_000),     # a bound the budget ends before
    })

MOSAICBERT = Recipe(
    source="""MosaicBERT (Portes et al. 2023, "MosaicBERT: A Bidirectional Encoder Optimized for
    Fast Pretraining", Section 2 and Table S1 (base)): ALiBi attention bias instead of position
    embeddings, a gated (GeGLU) feed-forward, 30 % masking, no NSP, decoupled AdamW at 5e-4 with
    6 % warm-up then linear decay (70k steps of 4096 sequences of 128; b2 0.98, eps 1e-6,
    weight decay 1e-5), no attention dropout, the vocabulary padded to a multiple of 64, and
    evaluation at 15 % masking. Unpadding: bertlab packs rows instead (data.packing), the same
    effect of computing no padding with the batch's examples kept. Vocabulary:
    bert-base-uncased's 30522 (30528 padded) in the paper.""",
    changes={
        "model": dict(position_embedding="alibi", activation="geglu", attention_dropout=0.0,
                      vocab_pad_multiple=64),
        "data": dict(SMALL_CORPUS_VOCAB, next_sentence=False, mask_rate=0.3,
                     max_predictions=39,        # 0.3 x 128
                     eval_mask_rate=0.15, batch_size=4096),
        "optimizer": dict(grad_accum_steps=16,  # micro-batches of 256
                          name="adamw", lr=5e-4, b2=0.98, eps=1e-6, weight_decay=1e-5,
                          warmup_fraction=0.06),
        "train": dict(num_steps=70_000),
    })

MODERNBERT = Recipe(
    source="""ModernBERT (Warner et al. 2024, "Smarter, Better, Faster, Longer: A Modern
    Bidirectional Encoder...", Section 2.1 and Table 3 (base)): rotary positions (theta 160k on
    global layers, 10k on local ones), GeGLU, pre-norm without bias terms (LayerNorm without its
    shift, eps 1e-5), alternating attention (global every third layer, a 128-token sliding window
    elsewhere), a norm after the embeddings (and none before layer 0's attention), the transform
    pooler, 30 % masking, no NSP, sequence length 1024 (the first phase), AdamW at 8e-4 (b2
    0.98, eps 1e-6, weight decay 1e-5). Unpadding: packed rows (data.packing). Not reproduced:
    StableAdamW and the warmup-stable-decay schedule (a triangle with 3 % warm-up here),
    the 50k BPE vocabulary (WordPiece here).""",
    changes={
        "model": dict(NO_BIASES,
                      decoder_bias=True,        # ModernBERT's decoder keeps its bias
                      position_embedding="rotary", rotary_theta=160_000.0,
                      local_rotary_theta=10_000.0, activation="geglu", head_activation="gelu",
                      pre_ln=True, layer_norm_eps=1e-5, local_window=128, global_every=3,
                      embedding_norm=True, first_layer_attention_norm=False, pooler="transform",
                      hidden_dropout=0.0, attention_dropout=0.0),
        "data": dict(SMALL_CORPUS_VOCAB, next_sentence=False, mask_rate=0.3, max_seq_length=1024,
                     max_predictions=308,       # 0.3 x 1024
                     batch_size=4608),
        "optimizer": dict(grad_accum_steps=72,  # micro-batches of 64
                          name="adamw", lr=8e-4, b2=0.98, eps=1e-6, weight_decay=1e-5,
                          warmup_fraction=0.03),
        "train": dict(num_steps=400_000),
    })

RECIPES = {"bert": BERT, "roberta": ROBERTA, "cramming": CRAMMING, "mosaicbert": MOSAICBERT,
           "modernbert": MODERNBERT}
# A recipe without variant= is built at BERT-base size, the size each paper reports first.
RECIPE_VARIANT = "base"
OPTIONS = ("variant", "steps", "minutes")


def parse_arg(arg: str) -> tuple[str, dict[str, str]]:
    """'cramming,variant=tiny,steps=300' -> ('cramming', {'variant': 'tiny', 'steps': '300'})."""
    name, *rest = [part.strip() for part in (arg or "tiny").split(",")]
    options = {}
    for part in rest:
        key, sep, value = part.partition("=")
        if not sep or key not in OPTIONS:
            raise ValueError(f"configs/pretrain.py: {part!r} in {arg!r} is not one of "
                             f"{', '.join(o + '=' for o in OPTIONS)}")
        options[key] = value
    return name, options


def shorten(config, steps: int) -> None:
    """steps=N: the same recipe for N updates, its warm-up kept in proportion and logs,
    evaluations and checkpoints at a cadence that fits (a tenth, a third, a half of the run)."""
    train, opt = config.train, config.optimizer
    if steps < 1:
        raise ValueError(f"configs/pretrain.py: steps={steps} must be >= 1")
    if not opt.warmup_fraction:
        opt.warmup_steps = int(round(opt.warmup_steps * steps / train.num_steps))
    train.num_steps = steps
    train.log_every = max(1, steps // 10)
    train.eval_every = max(1, steps // 3)
    train.checkpoint_every = max(1, steps // 2)
    train.eval_batches = min(train.eval_batches, 10)


def get_config(arg: str = "tiny") -> ml_collections.ConfigDict:
    name, options = parse_arg(arg)
    if name not in VARIANTS and name not in RECIPES:
        raise ValueError(f"configs/pretrain.py: unknown variant or recipe {name!r}; choose a "
                         f"recipe ({', '.join(RECIPES)}) or a variant ({', '.join(VARIANTS)})")
    if name in VARIANTS and "variant" in options:
        raise ValueError(f"configs/pretrain.py: {arg!r} names the variant twice")
    variant = options.get("variant", name if name in VARIANTS else RECIPE_VARIANT)
    if variant not in VARIANTS:
        raise ValueError(f"configs/pretrain.py: unknown variant={variant!r}; choose one of "
                         f"{', '.join(VARIANTS)}")
    config = variant_config(variant)
    if name in RECIPES:
        apply(config, RECIPES[name].changes)
    if "steps" in options:
        shorten(config, int(options["steps"]))
    if "minutes" in options:
        config.train.budget_minutes = float(options["minutes"])
    return config
