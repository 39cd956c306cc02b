"""The shell shared by config-driven commands: help, exit codes, error mapping."""

import pytest

from bertlab.commands import finetune as finetune_cmd
from bertlab.config_cli import run_config_command

CONFIG = "configs/finetune.py:task=rotten_tomatoes,recipe=quick"


class Diverged(RuntimeError):
    pass


class UserError(ValueError):
    pass


def _command(run):
    return lambda argv: run_config_command(argv, prog="probe", config_example=CONFIG, run=run,
                                           user_errors=lambda: (UserError,),
                                           diverged_error=lambda: Diverged)


def test_finetune_help_lists_every_key_with_its_value(capsys):
    assert finetune_cmd.main(["--config", CONFIG, "--help"]) == 0
    out = capsys.readouterr().out
    assert "usage: bertlab finetune" in out
    assert "--config.task='rotten_tomatoes'" in out
    assert "--config.optimizer.lr=" in out


def test_no_arguments_is_a_usage_error(capsys):
    assert _command(lambda c, f: 0)([]) == 2
    assert "usage: bertlab probe" in capsys.readouterr().out


def test_exit_codes_map_user_errors_and_divergence(tmp_path, capsys):
    argv = ["--config", CONFIG, "--workdir", str(tmp_path)]

    def raise_(error):
        def run(config, flags):
            raise error
        return run

    assert _command(lambda config, flags: 0)(argv) == 0
    assert _command(raise_(UserError("bad key x")))(argv) == 2
    assert "bertlab probe: error: bad key x" in capsys.readouterr().err
    assert _command(raise_(Diverged("loss is nan at step 3")))(argv) == 1
    missing = FileNotFoundError(2, "No such file or directory", "/nope/train.tsv")
    assert _command(raise_(missing))(argv) == 2
    assert "/nope/train.tsv: No such file or directory" in capsys.readouterr().err
    with pytest.raises(KeyError):  # a bug is not dressed up as a user error
        _command(raise_(KeyError("internal")))(argv)
    assert _command(lambda c, f: 0)(argv + ["--config.optimizer.lrr=1"]) == 2


def test_a_renamed_key_names_its_new_key_and_keeps_its_tail():
    import ml_collections

    from bertlab.config_cli import ConfigArgsError, check_override_keys

    config = ml_collections.ConfigDict({"data": {"batch_size": 8, "table": {"text": "t"}}})
    renamed = {"batch_size": "data.batch_size", "table": "data.table"}
    check_override_keys(config, ["data.batch_size", "data.table.text"], renamed)
    with pytest.raises(ConfigArgsError) as e:
        check_override_keys(config, ["batch_size"], renamed)
    assert str(e.value) == ("--config.batch_size: config key 'batch_size' is now "
                            "'data.batch_size'; use --config.data.batch_size")
    with pytest.raises(ConfigArgsError, match=r"use --config\.data\.table\.text$"):
        check_override_keys(config, ["table.text"], renamed)
    with pytest.raises(ConfigArgsError, match="did you mean 'data.batch_size'"):
        check_override_keys(config, ["data.batch_sise"], renamed)  # not renamed: a typo
