"""One module per `bertlab` sub-command, each exposing `main(argv) -> int` and `HELP`.

cli.py imports a command's module only when that command runs, so `bertlab --help` never
pays for jax or tensorflow imports.
"""


def add_finetuned_model_arguments(parser) -> None:
    """--workdir/--seed/--batch-size: how evaluate and predict name a fine-tuned model."""
    parser.add_argument("--workdir", required=True,
                        help="a finetune workdir, one of its seed_<n>/ dirs, or a model/ export")
    parser.add_argument("--seed", type=int, default=None,
                        help="which seed of a multi-seed workdir (default: the best one)")
    parser.add_argument("--batch-size", type=int, default=64, help="examples per batch")
    parser.add_argument("--no-packing", dest="packing", action="store_false",
                        help="pad every example to the model's max_seq_length instead of "
                             "packing several per row (same outputs up to float rounding)")
