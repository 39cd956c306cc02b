"""`bertlab finetune --config configs/finetune.py:task=NAME --workdir DIR [--config.KEY=VALUE ...]`.

A thin shell over bertlab.finetune.finetune: parse the locked config, run every seed, print the
summary, and turn the errors a user can fix into one line and an exit status (2: the command line,
the config or the inputs are wrong; 1: training diverged).
"""

from __future__ import annotations

import sys

from bertlab.config_cli import USAGE_EXIT_CODE, ConfigArgsError, parse_config_args, usage

PROG = "finetune"


def fail(message: str, code: int = USAGE_EXIT_CODE) -> int:
    print(f"bertlab {PROG}: error: {message}", file=sys.stderr)
    return code


def format_summary(summary: dict) -> str:
    """One line per metric: median [min, max] +- std over seeds, for eval (and test)."""
    lines = []
    for part in ("eval", "test"):
        for name, stats in summary.get(part, {}).items():
            if stats["n"] > 1:
                lines.append(f"  {part} {name}: median {stats['median']:.4f} "
                             f"[{stats['min']:.4f}, {stats['max']:.4f}], std {stats['std']:.4f} "
                             f"over {stats['n']} seeds")
            else:
                lines.append(f"  {part} {name}: {stats['median']:.4f}")
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    if not argv or any(arg in ("-h", "--help", "-help", "--helpfull") for arg in argv):
        print(usage(PROG, "configs/finetune.py:task=mrpc"))
        return 0 if argv else USAGE_EXIT_CODE
    try:
        config, flag_values = parse_config_args(argv, prog=PROG)
    except ConfigArgsError as e:
        return fail(str(e))

    from bertlab import finetune  # jax, flax: only once the command line is good
    from bertlab.init_from import InitFromError
    from bertlab.models.config import ConfigError
    from bertlab.pretrain import NonFiniteLossError
    from bertlab.tokenizer import VocabError

    try:
        summary = finetune.finetune(config, flag_values.workdir)
    except NonFiniteLossError as e:
        return fail(str(e), code=1)
    except (finetune.FinetuneConfigError, InitFromError, ConfigError, VocabError) as e:
        return fail(str(e))
    except (FileNotFoundError, PermissionError, IsADirectoryError) as e:
        return fail(f"{e.filename or ''}: {e.strerror or e}")
    print(f"done: {summary['task']} ({summary['metric']} picks the best epoch), best seed "
          f"{summary['best_seed']}; workdir {flag_values.workdir}")
    print(format_summary(summary))
    return 0
