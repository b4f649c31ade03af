#!/usr/bin/env bash
# Runs shellcheck on every shell script in the repository (scripts/, Benchmarks/, Fuzz/, .ci/): the CI step
# "shellcheck" of scripts/test.sh. A finding of any severity fails it; a deliberate exception is a
# `# shellcheck disable=SCxxxx # why` on the line before.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

scripts=()
while IFS= read -r -d '' file; do
    scripts+=("$file")
done < <(git ls-files -z -- 'scripts/*.sh' 'Benchmarks/*.sh' 'Fuzz/*.sh' '.ci/run')
((${#scripts[@]} > 0)) || { echo "lint-shell: no scripts found (not a git checkout?)" >&2; exit 1; }
shellcheck --external-sources "${scripts[@]}"
echo "lint-shell: ${#scripts[@]} scripts clean: ${scripts[*]}"
