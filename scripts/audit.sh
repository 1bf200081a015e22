#!/usr/bin/env bash
# pip-audit of the hash-pinned lock files (default: requirements.lock requirements-dev.lock).
#
#   bash scripts/audit.sh [REQUIREMENTS_FILE ...]
#
# Exit 1: a pinned version has a known vulnerability (listed), or the audit failed for a
# reason other than the network. Exit 0: no known vulnerability; or the vulnerability service
# could not be reached, or knew none of the pins (then it says SKIPPED: an offline run is not a
# failed run). The pins are read as written (--no-deps --disable-pip): nothing is installed or
# resolved; only names and versions go to the service (PyPI's, pip-audit's default).
# AUDIT_SERVICE_ARGS picks another, e.g. "-s osv" or "-s osv --osv-url URL".
set -uo pipefail

cd "$(dirname "$0")/.."
PIP_AUDIT="${PIP_AUDIT:-.venv/bin/pip-audit}"
PYTHON="${PYTHON:-.venv/bin/python}"
files=("$@")
[ ${#files[@]} -gt 0 ] || files=(requirements.lock requirements-dev.lock)

args=()
for f in "${files[@]}"; do
    [ -f "$f" ] || { echo "audit: $f not found" >&2; exit 1; }
    args+=(--requirement "$f")
done

out="$(mktemp)"
err="$(mktemp)"
trap 'rm -f "$out" "$err"' EXIT

# shellcheck disable=SC2086  # AUDIT_SERVICE_ARGS is a list of words
"$PIP_AUDIT" "${args[@]}" --no-deps --disable-pip --progress-spinner off --format json \
    --output "$out" --timeout "${AUDIT_TIMEOUT_S:-15}" ${AUDIT_SERVICE_ARGS:-} 2>"$err"
rc=$?

if [ -s "$out" ]; then
    "$PYTHON" - "$out" "${files[*]}" <<'EOF'
import json
import sys

report = json.load(open(sys.argv[1]))
files = sys.argv[2]
deps = report.get("dependencies", [])
vulnerable = [d for d in deps if d.get("vulns")]
skipped = [d for d in deps if "skip_reason" in d]
checked = len(deps) - len(skipped)
for d in vulnerable:
    for v in d["vulns"]:
        fixed = ", ".join(v.get("fix_versions", [])) or "no fixed version"
        print(f"audit: {d['name']}=={d['version']}: {v['id']} (fixed in {fixed})")
if vulnerable:
    print(
        f"audit: FAILED: {len(vulnerable)} of {checked} pins in {files} have known "
        "vulnerabilities (make lock LOCK_ARGS=--upgrade)",
        file=sys.stderr,
    )
    sys.exit(1)
if checked == 0:
    print(f"audit: SKIPPED: the vulnerability service knew none of the {len(deps)} pins in "
          f"{files} (no network, or an index without vulnerability data)")
    sys.exit(0)
print(f"audit: no known vulnerabilities in {checked} pins of {files}"
      + (f"; {len(skipped)} not found by the service" if skipped else ""))
EOF
    exit $?
fi
# No report: requests/urllib3 name what a missing network looks like; anything else fails.
network="ConnectionError|ConnectTimeout|ReadTimeout|Max retries exceeded|NameResolution"
network+="|Name or service not known|Temporary failure in name resolution|Network is unreachable"
network+="|Connection refused|ProxyError|SSLError|ServiceError"
if [ $rc -ne 0 ] && grep -qE "$network" "$err"; then
    echo "audit: SKIPPED: the vulnerability service could not be reached; ${files[*]} not checked"
    grep -E "$network" "$err" | tail -n 1 | cut -c1-200 | sed 's/^/audit:   /'
    exit 0
fi
cat "$err" >&2
echo "audit: FAILED: pip-audit exited with $rc" >&2
exit 1
