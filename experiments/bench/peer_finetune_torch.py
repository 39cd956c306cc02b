"""The fine-tune a transformers + PyTorch user writes: the peer of the whole-process case in
real_data.md (issue 14: `bertlab finetune` SST-2, 1,024 sentences, all-MiniLM-L6-v2, 1 epoch,
lr 1e-4, batch 32).

BertForSequenceClassification on the backbone, the tokenizer padding each batch to its longest
row (max 128 tokens), AdamW (weight decay 0.01, not on biases / LayerNorm) with linear warm-up
over 10 % of the updates and linear decay, dropout on, then accuracy on the whole dev split
(batches of 64, padded per batch). The training subset is bertlab's: the same seeded choice of
1,024 rows (numpy default_rng(0).choice without replacement, kept in file order), in a shuffled
order per epoch. Times include start-up (imports, loading, tokenising) from process start.

    .venv/bin/python experiments/bench/peer_finetune_torch.py \
        --model ../shared/models/all-MiniLM-L6-v2 --data-dir ../shared/data/glue_data
"""

import time

STARTED = time.time()

import argparse  # noqa: E402
import csv  # noqa: E402
import os  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402
from transformers import (AutoTokenizer, BertForSequenceClassification,  # noqa: E402
                          get_linear_schedule_with_warmup)


def read_sst2(path):
    with open(path, encoding="utf-8", newline="") as f:
        rows = list(csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE))
    return [r[0] for r in rows[1:]], np.asarray([int(r[1]) for r in rows[1:]])


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--max-train-examples", type=int, default=1024)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.manual_seed(args.seed)
    texts, labels = read_sst2(os.path.join(args.data_dir, "SST-2", "train.tsv"))
    rows = np.sort(np.random.default_rng(0).choice(len(texts), args.max_train_examples,
                                                   replace=False))
    texts, labels = [texts[i] for i in rows], labels[rows]
    dev_texts, dev_labels = read_sst2(os.path.join(args.data_dir, "SST-2", "dev.tsv"))
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    model = BertForSequenceClassification.from_pretrained(args.model, num_labels=2)
    no_decay = ("bias", "LayerNorm.weight")
    groups = [{"params": [p for n, p in model.named_parameters()
                          if not any(k in n for k in no_decay)], "weight_decay": 0.01},
              {"params": [p for n, p in model.named_parameters()
                          if any(k in n for k in no_decay)], "weight_decay": 0.0}]
    optimizer = torch.optim.AdamW(groups, lr=args.lr, eps=1e-6)
    steps = -(-len(texts) // args.batch_size) * args.epochs
    schedule = get_linear_schedule_with_warmup(optimizer, int(0.1 * steps), steps)
    train_started = time.time()
    model.train()
    for epoch in range(args.epochs):
        order = np.random.default_rng([args.seed, epoch + 1]).permutation(len(texts))
        for start in range(0, len(texts), args.batch_size):
            batch_rows = order[start:start + args.batch_size]
            inputs = tokenizer([texts[i] for i in batch_rows], padding="longest",
                               truncation=True, max_length=128, return_tensors="pt")
            out = model(**inputs, labels=torch.as_tensor(labels[batch_rows]))
            out.loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            schedule.step()
            optimizer.zero_grad()
    train_seconds = time.time() - train_started
    model.eval()
    correct = 0
    with torch.no_grad():
        for start in range(0, len(dev_texts), 64):
            inputs = tokenizer(dev_texts[start:start + 64], padding="longest", truncation=True,
                               max_length=128, return_tensors="pt")
            predicted = model(**inputs).logits.argmax(-1).numpy()
            correct += int((predicted == dev_labels[start:start + 64]).sum())
    print(f"peer: {len(texts)} train examples, {steps} steps, train {train_seconds:.1f} s, "
          f"dev accuracy {correct / len(dev_texts):.4f}, total {time.time() - STARTED:.1f} s")


if __name__ == "__main__":
    main()
