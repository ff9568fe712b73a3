# Shared by the converge tests, sourced from the repository root: test-deploy.sh (one QEMU VM,
# single-box inventory) and test-deploy-multi.sh (systemd-nspawn containers, multi-node
# inventory). The caller sets, before sourcing: results (the results file) and results_section
# (its section of that file, also the name of its logs); and, before calling play, the array
# play_args (inventory and extra variables) and the function results_header (the lines under the
# title).
repo=$(pwd)
venv=var/ansible-venv
bundle=${BUNDLE:-var/bundle/appliance-bundle.tar}
logs=var/ansible-cache
t0=$(date +%s)
declare -a steps=() checks=() play_args=()
pass=0 failures=0
step() { echo "== $1: $2 s ${3:-}"; steps+=("| $1 | $2 s | ${3:-} |"); }
elapsed() { echo $(( $(date +%s) - $1 )); }
check() {
  local what=$1; shift
  if "$@"; then checks+=("PASS $what"); pass=$((pass + 1)); echo "PASS $what"
  else checks+=("FAIL $what"); failures=$((failures + 1)); echo "FAIL $what"; fi
}
# Ansible's venv, and the bundle: built by `make bundle` if there is none (not rebuilt here: it
# takes minutes and captures the tree).
prepare_control_node() {
  test -x "$venv/bin/ansible-playbook" || { python3 -m venv "$venv" && "$venv/bin/pip" install -q -r ansible/requirements.txt; }
  test -f "$bundle" || make bundle
}
recap() { grep -A30 "PLAY RECAP" "$1" | grep -E '^[a-z0-9-]+ +:' | sed 's/  */ /g'; }

play() {
  ANSIBLE_CONFIG=ansible/ansible.cfg \
  ANSIBLE_CALLBACK_PLUGINS=ansible/tests/callback_plugins ANSIBLE_CALLBACKS_ENABLED=step_times \
    "$venv/bin/ansible-playbook" "${play_args[@]}" ansible/site.yml "$@"
}

first_play() {
  local s rc out=$logs/$results_section.log
  s=$(date +%s)
  set +e
  STEP_TIMES_FILE=$logs/$results_section-step-times.json play "$@" 2>&1 | tee "$out"
  rc=${PIPESTATUS[0]}
  set -e
  step "first converge: the whole playbook${1:+ ($*)}" "$(elapsed "$s")" "$(recap "$out" | paste -sd ';' | sed 's/;/<br>/g')"
  if (( rc != 0 )); then write_results "FAILED in the first converge (exit $rc; log: $out)"; exit 1; fi
}

second_play() {
  local s second out=$logs/$results_section-second.log
  s=$(date +%s)
  set +e
  play 2>&1 | tee "$out"
  set -e
  second=$(recap "$out")
  step "second run of the playbook" "$(elapsed "$s")" "$(paste -sd ';' <<<"$second" | sed 's/;/<br>/g')"
  # Every host's recap line: changed=0 and failed=0.
  idempotent() { [[ -n $second ]] && ! grep -vE 'changed=0 .*failed=0' <<<"$second" | grep -q .; }
  check "second run: changed=0, failed=0 on every host" idempotent
}

# The API checks through the TLS front (ansible/tests/api_checks.py); api_front holds its
# --connect/--name/--cacert/--key-file arguments. What a check printed goes into the results.
declare -a api_front=()
api() { python3 ansible/tests/api_checks.py "${api_front[@]}" "$@"; }
check_api() {
  local what=$1 out; shift
  if out=$(api "$@" 2>&1); then checks+=("PASS $what: ${out//$'\n'/; }"); pass=$((pass + 1)); echo "PASS $what: $out"
  else checks+=("FAIL $what: ${out//$'\n'/; }"); failures=$((failures + 1)); echo "FAIL $what: $out"; fi
}

# Results so far, also when a step fails: the times of what ran, the checks, the play's role times.
# The section between this test's markers is replaced; the other test's section is kept.
write_results() {
  local outcome=$1 times=$logs/$results_section-step-times.json section=$logs/$results_section.md
  {
    echo "# make $results_section: last run"
    echo
    echo "**$outcome** — $(date -u '+%Y-%m-%d %H:%M UTC'). $(results_header)"
    echo
    echo "| step | time | result |"
    echo "|---|---|---|"
    printf '%s\n' "${steps[@]}"
    if [[ -f $times ]]; then
      echo
      echo "First converge, time per role (\`ansible/tests/callback_plugins/step_times.py\`):"
      echo
      echo "| role / play | time |"
      echo "|---|---|"
      python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); [print(f"| {n} | {s:.0f} s |") for n, s in d["roles"]]' "$times"
      echo
      echo "Slowest tasks:"
      echo
      python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); [print(f"- {n}: {s:.0f} s") for n, s in d["slowest_tasks"]]' "$times"
    fi
    if (( ${#checks[@]} > 0 )); then
      echo
      echo "## Checks"
      echo
      printf -- '- %s\n' "${checks[@]}"
    fi
    if declare -F results_extra >/dev/null; then results_extra; fi
  } >"$section"
  python3 - "$results" "$results_section" "$section" <<'PY'
import pathlib, sys
path, name, section = pathlib.Path(sys.argv[1]), sys.argv[2], pathlib.Path(sys.argv[3]).read_text()
begin, end = f"<!-- {name}: begin -->", f"<!-- {name}: end -->"
old = path.read_text() if path.exists() else ""
block = f"{begin}\n{section.rstrip()}\n{end}"
if begin in old and end in old:
    new = old[: old.index(begin)] + block + old[old.index(end) + len(end):]
else:
    new = (old.rstrip() + "\n\n" if old.strip() else "") + block + "\n"
path.write_text(new)
PY
  echo "results in $results"
}

# The total, the outcome and the results; exits non-zero when a check failed.
finish() {
  step "total" "$(elapsed "$t0")" "$pass checks passed, $failures failed"
  if (( failures == 0 )); then write_results "Passed"; else write_results "FAILED: $failures of $((pass + failures)) checks"; fi
  exit $(( failures > 0 ))
}
