#!/usr/bin/env bash
# Time a fresh `make demo` install at one or more commits: for each, a git worktree in /tmp, a new
# venv in /tmp, pip with no cache at all (PIP_NO_CACHE_DIR=1: nothing read from or written to a
# cache, so every wheel is downloaded again), and only the install step timed
# (`make $VENV/.demo-installed`: venv creation, pip upgrade, bertlab[demo], scattertext). The demo
# itself is not run. Prints one line per commit: seconds, venv size, load average at the start.
#
#   bash experiments/bench/install_time.sh 5c4c09b 0123abc     # before and after, in that order
#
# Worktrees and venvs are removed afterwards. Other jobs on the machine slow pip down (it
# unpacks and byte-compiles on the CPU), so compare numbers measured one after the other.
set -euo pipefail
cd "$(git -C "$(dirname "$0")" rev-parse --show-toplevel)"
[ $# -ge 1 ] || { echo "usage: $0 COMMIT [COMMIT ...]" >&2; exit 2; }

for commit in "$@"; do
    short=$(git rev-parse --short "$commit")
    tree=/tmp/bertlab-install-$short
    venv=/tmp/bertlab-venv-$short
    rm -rf "$venv"
    git worktree add --detach --force "$tree" "$commit" >/dev/null 2>&1
    load=$(cut -d' ' -f1 /proc/loadavg)
    start=$(date +%s.%N)
    PIP_NO_CACHE_DIR=1 make -s -C "$tree" "$venv/.demo-installed" VENV="$venv" >/dev/null
    end=$(date +%s.%N)
    size=$(du -sh "$venv" | cut -f1)
    tf=$("$venv/bin/python" -c "import importlib.util as u; print('with tensorflow' if u.find_spec('tensorflow') else 'no tensorflow')")
    seconds=$(awk "BEGIN { printf \"%.0f\", $end - $start }")
    echo "$short: $seconds s, venv $size, $tf (load average $load at start)"
    rm -rf "$venv"
    git worktree remove --force "$tree"
done
