#!/usr/bin/env bash
# The README's first command on a machine with nothing of the project cached: a fresh clone of
# HEAD, a plain shell (HOME and the system PATH only), an empty DEMANDLAKE_CACHE (so the bootstrap
# creates the venv, builds Horovod from source, fetches the Delta jars and makes the class
# archive), then `make nightly` on an empty lake. About 15 minutes on 2 cores, so it is not part of
# `make test`: the suite's fresh-machine test (tests/test_fresh_machine.py) runs `make nightly` in
# a fresh copy and a plain shell too, but reuses the cached venv, and a bug that only a new venv
# shows (2026-12-07: no `demandlake` command in it, exit 127) passed it.
#
#   bench/fresh_machine.sh              # work folder in /tmp, removed when it passes
#   bench/fresh_machine.sh --keep       # keep it
#
# pip's own download cache (~/.cache/pip) is used when there, as it would be on a user's machine.
# Prints one line per step with its seconds, and the result; exit 0 only when all of it worked.
set -uo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
KEEP=0; [ "${1:-}" = "--keep" ] && KEEP=1
WORK="$(mktemp -d "${TMPDIR:-/tmp}/demandlake-fresh.XXXXXX")"
PLAIN_PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
fail() { echo "[fresh_machine] FAILED: $* (work folder kept: $WORK)"; exit 1; }

git clone -q "$ROOT" "$WORK/demandlake" || fail "git clone"
echo "[fresh_machine] clone of $(git -C "$ROOT" rev-parse --short HEAD) in $WORK/demandlake, empty cache $WORK/cache"
t0=$SECONDS
env -i HOME="$HOME" PATH="$PLAIN_PATH" DEMANDLAKE_CACHE="$WORK/cache" \
  bash -c "cd '$WORK/demandlake' && make nightly" >"$WORK/nightly.log" 2>&1
rc=$?
echo "[fresh_machine] make nightly: exit $rc after $((SECONDS - t0)) s (log: $WORK/nightly.log)"
grep '^\[bootstrap\]' "$WORK/nightly.log"
[ "$rc" = 0 ] || { tail -20 "$WORK/nightly.log"; fail "make nightly exited $rc"; }
venv="$(ls -d "$WORK"/cache/venv-* 2>/dev/null | head -1)"
[ -x "$venv/bin/demandlake" ] || fail "the new venv has no demandlake command"
grep -q "nightly run for" "$WORK/nightly.log" || fail "no 'nightly run for' line"
# The sample query it prints, pasted as printed, in the same plain shell.
query="$(grep -m1 ' sql "' "$WORK/nightly.log" | sed 's/^ *//')"
t1=$SECONDS
env -i HOME="$HOME" PATH="$PLAIN_PATH" DEMANDLAKE_CACHE="$WORK/cache" \
  bash -c "cd '$WORK/demandlake' && $query" >"$WORK/query.log" 2>&1 || { cat "$WORK/query.log"; fail "the printed query"; }
echo "[fresh_machine] the printed query answered in $((SECONDS - t1)) s: $(wc -l <"$WORK/query.log") lines"
echo "[fresh_machine] OK in $((SECONDS - t0)) s"
[ "$KEEP" = 1 ] || rm -rf "$WORK"
