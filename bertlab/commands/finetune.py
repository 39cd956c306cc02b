"""`bertlab finetune --config configs/finetune.py:task=NAME --workdir DIR [--config.KEY=VALUE ...]`.

A thin shell over bertlab.train.finetune.train_and_evaluate: config_cli.run_config_command parses the locked
config (`--help` with `--config` lists every key), runs every seed, and turns the errors a user can
fix into one line and an exit status (2: the command line, the config or the inputs are wrong;
1: training diverged).
"""

from __future__ import annotations

from bertlab.config_cli import run_config_command

PROG = "finetune"


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


def _user_errors() -> tuple:
    from bertlab.train.loop import TrainConfigError  # jax: only once the command line is good
    from bertlab.checkpoints.init_from import InitFromError
    from bertlab.models.config import ConfigError
    from bertlab.text.tokenizer import VocabError
    return (TrainConfigError, InitFromError, ConfigError, VocabError)


def _diverged() -> type:
    from bertlab.train.loop import NonFiniteLossError
    return NonFiniteLossError


def _run(config, flag_values) -> int:
    from bertlab.train import finetune

    summary = finetune.train_and_evaluate(config, flag_values.workdir)
    print(f"done: {summary['task']} ({summary['metric']} picks the best epoch), best seed "
          f"{summary['best_seed']}; workdir {flag_values.workdir}")
    print(format_summary(summary))
    return 0


def main(argv: list[str]) -> int:
    return run_config_command(argv, prog=PROG, config_example="configs/finetune.py:task=mrpc",
                              run=_run, user_errors=_user_errors, diverged_error=_diverged)
