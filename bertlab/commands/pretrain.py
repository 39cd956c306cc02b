"""`bertlab pretrain --config configs/pretrain.py:tiny --workdir DIR [--config.KEY=VALUE ...]`.

A thin shell over bertlab.pretrain.train_and_evaluate: parse the locked config, run, and turn the
errors a user can fix into one line and an exit status (2: the command line, the config or the
inputs are wrong; 1: training diverged).
"""

from __future__ import annotations

import sys

from bertlab.config_cli import USAGE_EXIT_CODE, ConfigArgsError, help_text, parse_config_args

PROG = "pretrain"


def fail(message: str, code: int = USAGE_EXIT_CODE) -> int:
    print(f"bertlab {PROG}: error: {message}", file=sys.stderr)
    return code


def main(argv: list[str]) -> int:
    if not argv or any(arg in ("-h", "--help", "-help", "--helpfull") for arg in argv):
        print(help_text(argv, PROG, "configs/pretrain.py:tiny"))
        return 0 if argv else USAGE_EXIT_CODE
    try:
        config, flag_values = parse_config_args(argv, prog=PROG)
    except ConfigArgsError as e:
        return fail(str(e))

    from bertlab import pretrain  # jax, flax, orbax: only once the command line is good
    from bertlab.checkpoints.state import CheckpointError
    from bertlab.data.shards import ShardError
    from bertlab.data.text import CorpusError
    from bertlab.models.config import ConfigError
    from bertlab.tokenizer import VocabError
    from bertlab.vocab import VocabLearnError

    try:
        final = pretrain.train_and_evaluate(config, flag_values.workdir)
    except pretrain.NonFiniteLossError as e:
        return fail(str(e), code=1)
    except (pretrain.PretrainConfigError, CheckpointError, ShardError, CorpusError, ConfigError,
            VocabError, VocabLearnError) as e:
        return fail(str(e))
    except (FileNotFoundError, PermissionError, IsADirectoryError) as e:
        return fail(f"{e.filename or ''}: {e.strerror or e}")
    summary = ", ".join(f"{key} {final[key]:.4g}" for key in
                        ("loss", "eval_mlm_loss", "eval_perplexity", "eval_mlm_accuracy",
                         "tokens_per_second", "mfu") if isinstance(final.get(key), float))
    print(f"done: step {final['step']}" + (f" ({summary})" if summary else "") +
          f"; workdir {flag_values.workdir}")
    return 0
