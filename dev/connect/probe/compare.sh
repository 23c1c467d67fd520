#!/usr/bin/env bash
# Prints "equal" when tables items and pairs of sinkprobe_src equal those of sinkprobe_dst row for
# row (psql's text forms of SELECT *), else "differ" (VERBOSE=1 prints the diff). DST=<db> picks
# another target.
set -uo pipefail
source "$(cd "$(dirname "${BASH_SOURCE[0]}")/../../.." && pwd)/.stack/env"; export PATH=$PG_BIN:$PATH
ok=1
for q in "items|id" "pairs|a, b"; do
  IFS='|' read -r t ord <<<"$q"
  s=$(psql -X -At -v ON_ERROR_STOP=1 -d sinkprobe_src -c "SELECT * FROM $t ORDER BY $ord" 2>&1) || ok=0
  d=$(psql -X -At -v ON_ERROR_STOP=1 -d "${DST:-sinkprobe_dst}" -c "SELECT * FROM $t ORDER BY $ord" 2>&1) || ok=0
  if [ "$s" != "$d" ]; then ok=0; [ -n "${VERBOSE:-}" ] && diff <(echo "$s") <(echo "$d"); fi
done
[ $ok = 1 ] && echo equal || echo differ
