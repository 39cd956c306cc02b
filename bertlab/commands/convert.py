"""bertlab convert: move weights between Google TF, HuggingFace and bertlab directories.

    bertlab convert --from google uncased_L-12_H-768_A-12 --to bertlab out/bert-base-uncased
    bertlab convert --from hf path/to/hf_dir --to bertlab out/dir --model bert
    bertlab convert --from bertlab out/dir --to hf out/hf_dir --check

--check reloads what was written and reports the largest difference in every tensor and in
the MLM/NSP/classifier logits on a fixed random batch (0 for a faithful conversion).
"""

from __future__ import annotations

import argparse
import logging
import pathlib
import sys

from bertlab.checkpoints import LAYOUTS, MODEL_KINDS, CheckpointError


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="bertlab convert", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--from", dest="source_layout", choices=LAYOUTS, required=True,
                        help="layout of PATH")
    parser.add_argument("path", metavar="PATH", help="checkpoint directory (or TF checkpoint prefix)")
    parser.add_argument("--to", dest="target_layout", choices=("hf", "bertlab", "modernbert"),
                        required=True, help="hf: BERT layout; modernbert: HF ModernBERT layout")
    parser.add_argument("out", metavar="OUT", help="output directory")
    parser.add_argument("--vocab", help="vocab.txt to write alongside (default: the one next to PATH)")
    parser.add_argument("--model", default="auto", choices=list(MODEL_KINDS),
                        help="which model's weights to take (default: the backbone and every head present)")
    parser.add_argument("--init-missing", action="store_true",
                        help="initialise tensors the checkpoint lacks (listed) instead of failing")
    parser.add_argument("--no-strict", action="store_true",
                        help="skip (and list) tensors no BERT model uses instead of failing")
    parser.add_argument("--check", action="store_true", help="reload the output and report differences")
    return parser.parse_args(argv)


def heads_of(params) -> list[str]:
    from bertlab.checkpoints.names import flatten_params

    prefixes = {path[:2] if path[0] == "cls" else path[:1] for path in flatten_params(params)}
    return sorted("/".join(p) for p in prefixes if p[0] != "bert")


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
    logging.getLogger("bertlab").setLevel(logging.INFO)
    from bertlab.checkpoints import load_pretrained, save_bertlab
    from bertlab.checkpoints.hf import save_hf
    from bertlab.models.config import ConfigError, count_params

    try:
        config, params, vocab = load_pretrained(args.path, args.model, layout=args.source_layout,
                                                strict=not args.no_strict, init_missing=args.init_missing)
        vocab = pathlib.Path(args.vocab) if args.vocab else vocab
        if vocab is not None and not vocab.is_file():
            raise CheckpointError(f"--vocab {vocab}: no such file")
        from bertlab.checkpoints.modernbert import save_modernbert
        save = {"hf": save_hf, "modernbert": save_modernbert}.get(args.target_layout, save_bertlab)
        save(args.out, config, params, vocab)
    except (CheckpointError, ConfigError) as error:
        print(f"bertlab convert: {error}", file=sys.stderr)
        return 2
    print(f"wrote {args.target_layout} checkpoint to {args.out}: {count_params(params):,} parameters, "
          f"L={config.num_layers} H={config.hidden_size} A={config.num_heads} "
          f"activation={config.activation}; heads: {', '.join(heads_of(params)) or 'none'}; "
          f"vocab: {vocab or 'none (pass --vocab)'}")
    if args.check:
        return report_round_trip(config, params, args.out)
    return 0


def report_round_trip(config, params, out: str) -> int:
    """Reloads OUT and compares tensors and logits with what was converted."""
    import jax
    import numpy as np

    from bertlab.checkpoints import load_pretrained
    from bertlab.checkpoints.names import flatten_params
    from bertlab.models import BertForPreTraining, BertForSequenceClassification, BertModel

    reloaded_config, reloaded, _ = load_pretrained(out)
    before, after = flatten_params(params), flatten_params(reloaded)
    if set(before) != set(after):
        print(f"check FAILED: tensors differ: {sorted(set(before) ^ set(after))}", file=sys.stderr)
        return 1
    tensor_diff = max(float(np.max(np.abs(before[p] - after[p]))) for p in before)

    rng = np.random.default_rng(0)
    ids = rng.integers(0, config.vocab_size, (2, 16)).astype(np.int32)
    segments = np.repeat((np.arange(16) >= 8)[None].astype(np.int32), 2, axis=0)
    mask = np.ones_like(ids)

    def outputs(cfg, tree):
        tree = dict(tree) if "bert" in tree else {"bert": tree}
        results = {"sequence": BertModel(cfg).apply({"params": tree["bert"]}, ids, segments, mask)[0]}
        if "cls" in tree:
            with_nsp = "seq_relationship" in tree["cls"]
            out = BertForPreTraining(cfg, with_nsp=with_nsp).apply(
                {"params": {"bert": tree["bert"], "cls": tree["cls"]}}, ids, segments, mask)
            results["mlm_logits"] = out["mlm_logits"]
            if with_nsp:
                results["nsp_logits"] = out["nsp_logits"]
        if "classifier" in tree and "head_encoder" not in tree:
            labels = tree["classifier"]["kernel"].shape[-1]
            results["classifier_logits"] = BertForSequenceClassification(cfg, labels).apply(
                {"params": {"bert": tree["bert"], "classifier": tree["classifier"]}}, ids, segments, mask)
        return results

    run = jax.jit(outputs, static_argnums=0)  # params as arguments, not baked-in constants
    ours, theirs = run(config, params), run(reloaded_config, reloaded)
    print(f"check: max |diff| over {len(before)} tensors = {tensor_diff:.3g}")
    worst = 0.0
    for name in ours:
        diff = float(np.max(np.abs(np.asarray(ours[name]) - np.asarray(theirs[name]))))
        worst = max(worst, diff)
        print(f"check: max |diff| {name} = {diff:.3g}")
    return 0 if tensor_diff == 0 and worst <= 1e-5 else 1
