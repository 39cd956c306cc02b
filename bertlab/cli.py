"""The `bertlab` command line: a thin dispatcher over bertlab/commands/<name>.py.

Each command prints its own errors (config keys, data files, checkpoints) as one line with exit
status 2. What escapes a command and is still the user's to fix (a full disk, a read-only or
unwritable path, a workdir that is a file, a file that is not UTF-8, a damaged weights file) is
turned into one line here by bertlab.failures; anything else is a bug and keeps its traceback.
BERTLAB_DEBUG=1 shows the traceback of every failure.
"""

from __future__ import annotations

import importlib
import os
import sys

# name -> one-line description. Each lives in bertlab/commands/<name>.py with main(argv) -> int.
COMMANDS = {
    "vocab": "learn a WordPiece vocabulary from text files",
    "tokenize": "tokenise lines of text (file or stdin) into tokens or ids",
    "convert": "import/export checkpoints (Google TF, HuggingFace) <-> bertlab",
    "create-data": "turn raw text into pretraining shards on disk",
    "export-text": "write a task split's texts as a pretraining corpus (one document each)",
    "pretrain": "masked-LM pretraining (--config configs/pretrain.py:tiny --workdir DIR)",
    "finetune": "fine-tune on GLUE/SNLI/IMDB/CSV (--config configs/finetune.py:task=sst2)",
    "evaluate": "evaluate a fine-tuned workdir on a split",
    "predict": "predict labels for raw strings or pairs",
    "embed": "mean-pooled sentence embeddings",
    "similarity": "cosine-similarity matrix and heatmap for sentences",
    "sweep": "run (or --dry-run) the arms of an experiment study",
    "report": "collect a study's workdirs into results.md",
    "submit": "GLUE leaderboard files from fine-tuned workdirs (TASK=WORKDIR ...)",
    "compare": "final metrics, config differences and curves of any workdirs",
}


# Commands that compile jitted steps: they keep compiled programs on disk (bertlab.train.compile_cache).
COMPILING_COMMANDS = {"pretrain", "finetune", "evaluate", "predict", "embed", "similarity",
                      "submit"}


def usage() -> str:
    width = max(map(len, COMMANDS))
    lines = ["usage: bertlab <command> [options]   (bertlab <command> --help for its options)", "",
             "commands:"]
    lines += [f"  {name:<{width}}  {text}" for name, text in COMMANDS.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    from bertlab.train import startup_profile  # BERTLAB_PROFILE_STARTUP: phase times, no jax
    startup_profile.mark("interpreter")
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(usage())
        return 0
    if argv[0] in ("-V", "--version"):
        from bertlab import __version__
        print(__version__)
        return 0
    name, rest = argv[0], argv[1:]
    from bertlab import runtime  # XLA flags per command, before jax starts (bertlab/runtime.py)
    runtime.configure(name)
    if name not in COMMANDS:
        print(f"bertlab: unknown command {name!r}\n\n{usage()}", file=sys.stderr)
        return 2
    try:
        module = importlib.import_module(f"bertlab.commands.{name.replace('-', '_')}")
    except ModuleNotFoundError as e:
        if e.name == f"bertlab.commands.{name.replace('-', '_')}":
            print(f"bertlab: command {name!r} is not available in this version", file=sys.stderr)
            return 2
        raise
    if name in COMPILING_COMMANDS:
        from bertlab.train import compile_cache
        compile_cache.enable()
    startup_profile.mark("command import")
    try:
        code = int(module.main(rest) or 0)
        sys.stdout.flush()  # a closed pipe shows here, not in the interpreter's exit
        return code
    except BrokenPipeError:
        # stdout's reader went away (`bertlab sweep --dry-run | head`): stop quietly with the
        # shell's SIGPIPE status, and keep Python from failing again when it flushes at exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 128 + 13
    except Exception as error:  # noqa: BLE001 - anything not a user's failure is re-raised
        from bertlab import failures

        message = None if failures.debug() else failures.one_line(error)
        if message is None:
            raise
        print(f"bertlab {name}: error: {message}", file=sys.stderr)
        return failures.USAGE_EXIT_CODE


if __name__ == "__main__":
    sys.exit(main())
