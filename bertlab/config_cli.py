"""`--config file.py:arg --config.key=value --workdir DIR`, parsed from an explicit argv.

Commands (pretrain, finetune) call `parse_config_args(argv, ...)` on a fresh absl FlagValues, so
nothing depends on sys.argv or on global flags, and tests can call a command's main() in-process.
Every failure becomes a `ConfigArgsError` holding one line that names the offending key, which
the command prints before exiting with status 2 (the usage-error convention).
"""

from __future__ import annotations

import difflib
import os
import re
from typing import Callable, Mapping, Sequence

import ml_collections

USAGE_EXIT_CODE = 2
_REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class ConfigArgsError(ValueError):
    """A command line that cannot produce a config; the message is one line naming the key."""


def _split_file_arg(value: str) -> tuple[str, str | None]:
    path, sep, arg = value.partition(":")
    return path, (arg if sep else None)


def resolve_config_path(value: str) -> str:
    """`configs/x.py:arg` relative to the cwd, else to the repository root (editable installs)."""
    path, arg = _split_file_arg(value)
    if not os.path.exists(path) and not os.path.isabs(path):
        candidate = os.path.join(_REPO_ROOT, path)
        if os.path.exists(candidate):
            path = candidate
    if not os.path.exists(path):
        raise ConfigArgsError(f"--config {value}: config file {path!r} not found")
    return path if arg is None else f"{path}:{arg}"


def _find_config_value(argv: Sequence[str]) -> tuple[int, str] | None:
    for i, arg in enumerate(argv):
        if arg.startswith("--config="):
            return i, arg[len("--config="):]
        if arg in ("--config", "-config") and i + 1 < len(argv):
            return i, argv[i + 1]
    return None


def _override_keys(argv: Sequence[str]) -> list[str]:
    keys = []
    for arg in argv:
        match = re.match(r"^--?(?:no)?config\.([^=]+)", arg)
        if match:
            keys.append(match.group(1))
    return keys


def _load_config_module(value: str, shown_as: str | None = None):
    """(module, arg) of `file.py[:arg]`; the module must define get_config()."""
    import importlib.util

    path, arg = _split_file_arg(value)
    value = shown_as or value
    spec = importlib.util.spec_from_file_location("_bertlab_config_probe", path)
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except Exception as e:
        raise ConfigArgsError(f"--config {value}: cannot load {path} ({type(e).__name__}: {e})"
                              ) from None
    if not hasattr(module, "get_config"):
        raise ConfigArgsError(f"--config {value}: {path} defines no get_config()")
    return module, arg


def load_config_file(value: str, shown_as: str | None = None) -> ml_collections.ConfigDict:
    """The ConfigDict of `file.py[:arg]`, without overrides (used to check override keys)."""
    module, arg = _load_config_module(value, shown_as)
    return _call_get_config(module, arg, shown_as or value)


def _call_get_config(module, arg: str | None, shown: str) -> ml_collections.ConfigDict:
    try:
        return module.get_config(arg) if arg is not None else module.get_config()
    except Exception as e:
        raise ConfigArgsError(f"--config {shown}: {_one_line(str(e))}") from None


def check_override_keys(config: ml_collections.ConfigDict, keys: Sequence[str],
                        renamed: Mapping[str, str] | None = None) -> None:
    """Rejects `--config.a.b` unless a.b exists: a key the config file lists in `renamed` (its
    RENAMED_KEYS, old key -> new key) names its new key, any other suggests the nearest key."""
    renamed = renamed or {}
    for key in keys:
        node = config
        parts = key.split(".")
        for depth, part in enumerate(parts):
            if not isinstance(node, ml_collections.ConfigDict) or part not in node:
                old = ".".join(parts[:depth + 1])
                if old in renamed:
                    new = renamed[old] + key[len(old):]
                    raise ConfigArgsError(f"--config.{key}: config key {old!r} is now "
                                          f"{renamed[old]!r}; use --config.{new}")
                where = ".".join(parts[:depth]) or "the config"
                choices = sorted(node.keys()) if isinstance(node, ml_collections.ConfigDict) else []
                close = difflib.get_close_matches(part, choices, n=1)
                hint = (f" (did you mean {'.'.join(parts[:depth] + close[:1])!r}?)" if close
                        else f"; keys of {where}: {', '.join(choices)}" if choices
                        else f"; {where} is a value, not a group")
                raise ConfigArgsError(f"--config.{key}: unknown config key {key!r}{hint}")
            node = node[part]


def _one_line(text: str) -> str:
    return " ".join(line.strip() for line in str(text).strip().splitlines() if line.strip())


def _explain_flag_error(error: Exception) -> str:
    text = _one_line(error)
    # absl: "flag --config.optimizer.lr=abc: could not convert string to float: 'abc'"
    match = re.match(r"flag --config\.([\w.]+)=(.*?): (.*)", text)
    if match:
        key, value, why = match.groups()
        return f"--config.{key}={value}: wrong type for config key {key!r} ({why})"
    match = re.match(r"Unknown command line flag '(.*?)'", text)
    if match:
        return (f"unknown flag --{match.group(1)} "
                "(config keys are set with --config.GROUP.KEY=VALUE)")
    return text


def parse_config_args(argv: Sequence[str], *, prog: str,
                      define_flags: Callable | None = None, require_workdir: bool = True):
    """Parses argv into (config, flag_values); raises ConfigArgsError with a one-line message.

    define_flags(flag_values) may add command-specific absl flags. The config is locked: an
    override of an unknown key or of the wrong type is refused.
    """
    from absl import flags
    from ml_collections import config_flags

    argv = list(argv)
    found = _find_config_value(argv)
    if found is None:
        raise ConfigArgsError(f"--config is required, e.g. --config configs/{prog}.py:tiny")
    index, value = found
    resolved = resolve_config_path(value)
    if argv[index].startswith("--config="):
        argv[index] = f"--config={resolved}"
    else:
        argv[index + 1] = resolved
    module, arg = _load_config_module(resolved, shown_as=value)
    check_override_keys(_call_get_config(module, arg, value), _override_keys(argv),
                        renamed=getattr(module, "RENAMED_KEYS", None))

    flag_values = flags.FlagValues()
    config_flags.DEFINE_config_file("config", None, "config file and variant: file.py:variant",
                                    flag_values=flag_values, lock_config=True,
                                    sys_argv=[prog] + argv)
    flags.DEFINE_string("workdir", None, "directory for checkpoints, logs and data",
                        flag_values=flag_values)
    if define_flags is not None:
        define_flags(flag_values)
    try:
        leftover = flag_values([prog] + argv)
    except flags.Error as e:
        raise ConfigArgsError(f"{_explain_flag_error(e)}") from None
    except (AttributeError, KeyError, TypeError, ValueError) as e:
        raise ConfigArgsError(f"{_one_line(str(e))}") from None
    if len(leftover) > 1:
        raise ConfigArgsError(f"unexpected argument {leftover[1]!r}")
    if require_workdir and not flag_values.workdir:
        raise ConfigArgsError(f"--workdir is required")
    return flag_values.config, flag_values


def usage(prog: str, config_example: str) -> str:
    return (f"usage: bertlab {prog} --config {config_example} --workdir DIR "
            f"[--config.GROUP.KEY=VALUE ...]\n\n"
            f"Any key of the config file can be overridden (the config is locked: unknown keys and "
            f"wrong types\nare refused). The config file's docstring lists its variants and "
            f"example commands;\nconfig.json in the workdir records the full config of each run.")


def describe_config(config: ml_collections.ConfigDict, prefix: str = "") -> list[str]:
    """`group.key = value` lines of every key, for `--config FILE --help`."""
    lines = []
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, ml_collections.ConfigDict):
            lines += describe_config(value, prefix=f"{name}.")
        else:
            lines.append(f"  --config.{name}={value!r}")
    return lines


def help_text(argv: Sequence[str], prog: str, config_example: str) -> str:
    """Usage, plus the keys and values of the config named by --config (when it loads)."""
    text = usage(prog, config_example)
    found = _find_config_value(list(argv))
    if found is not None:
        try:
            config = load_config_file(resolve_config_path(found[1]), shown_as=found[1])
        except ConfigArgsError as e:
            return f"{text}\n\n{e}"
        text += f"\n\nkeys of {found[1]} (current values):\n" + "\n".join(describe_config(config))
    return text


def run_config_command(argv: Sequence[str], *, prog: str, config_example: str,
                       run: Callable, user_errors: Callable[[], tuple],
                       diverged_error: Callable[[], type] | None = None) -> int:
    """The shell every config-driven command shares: help, parse, run, map errors to exit codes.

    `run(config, flag_values)` does the work and returns the exit status. `user_errors()` returns
    the exception classes whose message a user can act on (printed as one line, status 2); it is a
    callable so jax/flax are imported only once the command line is known to be good.
    `diverged_error()` names the non-finite-loss exception (status 1: training diverged).
    """
    import sys

    def fail(message: str, code: int = USAGE_EXIT_CODE) -> int:
        print(f"bertlab {prog}: error: {message}", file=sys.stderr)
        return code

    argv = list(argv)
    if not argv or any(arg in ("-h", "--help", "-help", "--helpfull") for arg in argv):
        print(help_text(argv, prog, config_example))
        return 0 if argv else USAGE_EXIT_CODE
    try:
        config, flag_values = parse_config_args(argv, prog=prog)
    except ConfigArgsError as e:
        return fail(str(e))
    errors = user_errors()
    diverged = diverged_error() if diverged_error is not None else None
    try:
        return run(config, flag_values)
    except Exception as e:  # noqa: BLE001 - re-raised below unless it is a user error
        if diverged is not None and isinstance(e, diverged):
            return fail(str(e), code=1)
        if isinstance(e, errors):
            return fail(str(e))
        if isinstance(e, (FileNotFoundError, PermissionError, IsADirectoryError)):
            return fail(f"{e.filename or ''}: {e.strerror or e}")
        raise
