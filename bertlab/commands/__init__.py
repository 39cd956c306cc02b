"""One module per `bertlab` sub-command, each exposing `main(argv) -> int` and `HELP`.

cli.py imports a command's module only when that command runs, so `bertlab --help` never
pays for jax or tensorflow imports.
"""
