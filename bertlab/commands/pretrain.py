"""`bertlab pretrain --config configs/pretrain.py:tiny --workdir DIR [--config.KEY=VALUE ...]`.

A thin shell over bertlab.train.pretrain.train_and_evaluate: config_cli.run_config_command parses the
locked config and turns the errors a user can fix into one line and an exit status (2: the command
line, the config or the inputs are wrong; 1: training diverged).
"""

from __future__ import annotations

from bertlab.config_cli import run_config_command

PROG = "pretrain"


def _user_errors() -> tuple:
    from bertlab.train.loop import TrainConfigError  # jax: only once the command line is good
    from bertlab.checkpoints.errors import CheckpointError
    from bertlab.data.pretraining.shards import ShardError
    from bertlab.data.pretraining.corpus import CorpusError
    from bertlab.models.config import ConfigError
    from bertlab.text.tokenizer import VocabError
    from bertlab.text.learn import VocabLearnError
    return (TrainConfigError, CheckpointError, ShardError, CorpusError, ConfigError,
            VocabError, VocabLearnError)


def _diverged() -> type:
    from bertlab.train.loop import NonFiniteLossError
    return NonFiniteLossError


def _run(config, flag_values) -> int:
    from bertlab.train import pretrain

    final = pretrain.train_and_evaluate(config, flag_values.workdir)
    summary = ", ".join(f"{key} {final[key]:.4g}" for key in
                        ("loss", "eval_mlm_loss", "eval_perplexity", "eval_mlm_accuracy",
                         "tokens_per_second", "mfu") if isinstance(final.get(key), float))
    print(f"done: step {final['step']}" + (f" ({summary})" if summary else "") +
          f"; workdir {flag_values.workdir}")
    return 0


def main(argv: list[str]) -> int:
    return run_config_command(argv, prog=PROG, config_example="configs/pretrain.py:tiny",
                              run=_run, user_errors=_user_errors, diverged_error=_diverged)
