#!/usr/bin/env bash
# The real converge: boot a bare Debian 12 VM (built by build-vm-image.sh) under QEMU, run the
# playbook against it over SSH with the single-box inventory and the offline bundle, then check
# what a hardened appliance must be, and run the playbook a second time expecting no change.
#
# Network: the VM sits on QEMU's user-mode network with restrict=on: it reaches nothing outside
# itself. SSH and HTTPS are forwarded from 127.0.0.1 only, and one probe address inside the VM's
# network (10.0.2.100:80) runs a local script, so the test can see that the VM's firewall drops
# egress. Debian packages come from a local mirror disk (build-local-mirror.sh: the .deb files,
# fetched on this machine), the Python side from the bundle with pip --no-index: the VM downloads
# nothing. Ollama is not installed (ollama_enabled=false: its binary cannot be downloaded here);
# the embedded llama.cpp backend serves the bundled models.
#
# QEMU runs with 2 vCPUs under `nice -n 10` (the machine is shared), TCG by default (a KVM guest
# does not start on this project's machines; VM_ACCEL=kvm where it does).
#
# After the checks of the hardened box, a real chat and a redaction go through nginx with an API
# key made on the box: the answer, the privacy receipt (body and headers) and the redacted text
# are checked (ansible/tests/api_checks.py). The multi-node layout is test-deploy-multi.sh; both
# share deploy-lib.sh.
#
# DEPLOY_FROM chooses the starting disk:
#   bare (default)  a fresh copy-on-write disk over the bare image: the full test. Only this
#                   mode writes ansible/tests/DEPLOY-RESULTS.md.
#   provisioned     a disk over a snapshot taken after the bootstrap and base plays (made from
#                   bare on first use, kept in var/ansible-cache/vm/provisioned.qcow2): skips the
#                   slow package install while the later roles are being fixed.
#   last            the previous run's disk as it was left (e.g. after a failure).
# DEPLOY_START_AT="task name" starts the first run at that task (with provisioned/last);
# DEPLOY_KEEP_VM=1 leaves the VM running at the end (ssh -p 2222 root@127.0.0.1 with the key in
# var/ansible-cache/vm/id_ed25519); stop it with kill "$(cat var/ansible-cache/vm/qemu.pid)".
set -euo pipefail
cd "$(dirname "$0")/../.."
work=var/ansible-cache/vm
ssh_port=${VM_SSH_PORT:-2222}
https_port=${VM_HTTPS_PORT:-8443}
from=${DEPLOY_FROM:-bare}
results_section=test-deploy
if [[ $from == bare ]]; then results=ansible/tests/DEPLOY-RESULTS.md; else results=var/ansible-cache/deploy-results-$from.md; fi
source ansible/tests/deploy-lib.sh

for tool in qemu-system-x86_64 qemu-img debootstrap mkfs.ext4 debugfs dpkg-scanpackages ssh curl; do
  command -v "$tool" >/dev/null || {
    apt-get install -y -qq --no-install-recommends qemu-system-x86 qemu-utils debootstrap e2fsprogs dpkg-dev openssh-client curl >/dev/null
    break
  }
done
prepare_control_node
for port in "$ssh_port" "$https_port"; do
  if ss -Hltn "sport = :$port" | grep -q .; then echo "port $port is in use (set VM_SSH_PORT / VM_HTTPS_PORT)" >&2; exit 1; fi
done

s=$(date +%s)
bash ansible/tests/build-vm-image.sh "$work"
step "bare Debian 12 image (debootstrap; cached after the first build)" "$(elapsed "$s")"
s=$(date +%s)
bash ansible/tests/build-local-mirror.sh "$work"
step "local Debian mirror disk for the VM (cached)" "$(elapsed "$s")"

if [[ ${VM_ACCEL:-tcg} == kvm ]]; then accel=(-enable-kvm -cpu host); accel_name=KVM
else accel=(-accel tcg,thread=multi -cpu max); accel_name="TCG (software emulation)"; fi
# The probe: a connection from the VM to 10.0.2.100:80 runs this script on the host side.
probe=$repo/$work/probe.sh
printf '#!/bin/sh\ndate +%%s >>%q\necho probe\n' "$repo/$work/probe.hits" >"$probe"
chmod 0755 "$probe"
: >"$work/probe.hits"
ssh_opts=(-i "$work/id_ed25519" -p "$ssh_port" -o UserKnownHostsFile="$work/known_hosts"
  -o StrictHostKeyChecking=accept-new -o ConnectTimeout=10 -o BatchMode=yes -o LogLevel=ERROR)
vm() { ssh "${ssh_opts[@]}" root@127.0.0.1 "$@"; }
qemu_pid() { cat "$work/qemu.pid" 2>/dev/null || true; }
stop_vm() {
  local pid; pid=$(qemu_pid)
  [[ -n $pid ]] && kill -0 "$pid" 2>/dev/null || return 0
  if [[ ${1:-} == clean ]]; then
    vm 'sync; systemctl poweroff' >/dev/null 2>&1 || true
    for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || return 0; sleep 3; done
  fi
  kill "$pid" 2>/dev/null || true
  while kill -0 "$pid" 2>/dev/null; do sleep 1; done
}
boot_vm() {
  rm -f "$work/known_hosts" "$work/console.log"
  nice -n 10 qemu-system-x86_64 "${accel[@]}" -m 6144 -smp 2 -display none -daemonize \
    -pidfile "$work/qemu.pid" -serial "file:$work/console.log" \
    -kernel "$work/vmlinuz" -initrd "$work/initrd.img" -append "root=/dev/vda rw console=ttyS0" \
    -drive "file=$work/run.qcow2,if=virtio,format=qcow2" \
    -drive "file=$work/mirror.img,if=virtio,format=raw,readonly=on" \
    -netdev "user,id=n0,restrict=on,hostfwd=tcp:127.0.0.1:$ssh_port-:22,hostfwd=tcp:127.0.0.1:$https_port-:443,guestfwd=tcp:10.0.2.100:80-cmd:$probe" \
    -device virtio-net-pci,netdev=n0
  local s; s=$(date +%s)
  until vm true 2>/dev/null; do
    (( $(date +%s) - s < 1200 )) || { echo "VM did not answer SSH in 1200 s" >&2; tail -20 "$work/console.log"; exit 1; }
    sleep 5
  done
  # The site's local mirror: the disk of .deb files, read-only, the only apt source.
  vm 'mkdir -p /srv/debian-mirror && (mountpoint -q /srv/debian-mirror || mount -o ro /dev/vdb /srv/debian-mirror) &&
      echo "deb [trusted=yes] file:/srv/debian-mirror ./" >/etc/apt/sources.list'
}
cleanup() {
  if [[ ${DEPLOY_KEEP_VM:-0} == 1 ]]; then echo "VM left running: pid $(qemu_pid), ssh port $ssh_port"; else stop_vm; fi
}
trap cleanup EXIT

export ANSIBLE_SSH_ARGS="-o ControlMaster=auto -o ControlPersist=300s -o UserKnownHostsFile=$repo/$work/known_hosts -o StrictHostKeyChecking=yes"
play_args=(-i ansible/inventories/single-box
  -e ansible_host=127.0.0.1 -e "ansible_port=$ssh_port" -e ansible_user=root
  -e "ansible_ssh_private_key_file=$repo/$work/id_ed25519"
  -e ollama_enabled=false -e base_install_window=false -e "appliance_bundle_file=$repo/$bundle")

results_header() {
  echo "Started from \`$from\`. VM under $accel_name, 2 vCPUs"
  echo "(\`nice -n 10\`), 6 GiB, on a shared 2-core machine; \`ollama_enabled=false\`: the Ollama binary cannot"
  echo "be downloaded here, so the embedded llama.cpp backend serves the bundled models. The VM's network is"
  echo "QEMU user-mode with \`restrict=on\`; apt installs from the local mirror disk, pip from the bundle."
}
results_extra() {
  if [[ -s $work/security.txt ]]; then
    echo
    echo "\`systemd-analyze security appliance.service\` inside the VM (lines not fully hardened, and the total):"
    echo
    echo '```'
    grep -E "Overall exposure|^✗" "$work/security.txt" | head -40 || true
    echo '```'
  fi
}

case $from in
  bare)
    rm -f "$work/run.qcow2"
    qemu-img create -q -f qcow2 -b base.raw -F raw "$work/run.qcow2" ;;
  provisioned)
    if [[ ! -f $work/provisioned.qcow2 || $work/base.raw -nt $work/provisioned.qcow2 || $work/mirror.img -nt $work/provisioned.qcow2 ]]; then
      rm -f "$work/run.qcow2" "$work/provisioned.qcow2"
      qemu-img create -q -f qcow2 -b base.raw -F raw "$work/run.qcow2"
      s=$(date +%s)
      boot_vm
      step "snapshot: boot the bare VM" "$(elapsed "$s")"
      s=$(date +%s)
      play --tags bootstrap,base 2>&1 | tee "$logs/provision-snapshot.log"
      stop_vm clean
      mv "$work/run.qcow2" "$work/provisioned.qcow2"
      step "snapshot: bootstrap and base plays, then shut down" "$(elapsed "$s")" "$(recap "$logs/provision-snapshot.log")"
    fi
    rm -f "$work/run.qcow2"
    qemu-img create -q -f qcow2 -b provisioned.qcow2 -F qcow2 "$work/run.qcow2" ;;
  last)
    test -f "$work/run.qcow2" || { echo "no previous disk at $work/run.qcow2" >&2; exit 1; } ;;
  *) echo "DEPLOY_FROM must be bare, provisioned or last" >&2; exit 2 ;;
esac

s=$(date +%s)
boot_vm
step "boot the VM to SSH ($accel_name)" "$(elapsed "$s")"

probe_reached() { vm timeout 10 bash -c "'exec 3<>/dev/tcp/10.0.2.100/80; head -c5 <&3'" 2>/dev/null | grep -q probe; }
if [[ $from == bare ]]; then
  # Control for the egress check below: before the playbook the probe is reachable.
  check "control: before the playbook the bare VM reaches the probe (10.0.2.100:80)" probe_reached
fi

if [[ -n ${DEPLOY_START_AT:-} ]]; then first_play --start-at-task "$DEPLOY_START_AT"; else first_play; fi

check "services active (appliance nginx nftables chrony ssh appliance-backup.timer)" \
  vm systemctl is-active appliance nginx nftables chrony ssh appliance-backup.timer
# Inside the VM with Python's TLS client (the appliance has no curl), checking the certificate.
check "/readyz through nginx inside the VM (TLS, internal CA)" vm python3 -c "'import ssl, urllib.request as u; ctx = ssl.create_default_context(cafile=\"/etc/appliance-ca/ca.crt\"); ctx.check_hostname = False; print(u.urlopen(\"https://127.0.0.1/readyz\", context=ctx, timeout=60).read().decode())'"
vm cat /etc/appliance-ca/ca.crt >"$work/ca.crt"
curl_vm() { curl -fsS --max-time 60 --cacert "$work/ca.crt" --resolve "appliance.example.internal:$https_port:127.0.0.1" "$@"; }
check "/readyz through nginx from the host (127.0.0.1:$https_port forwarded, certificate and name verified)" \
  curl_vm -o "$work/readyz.json" "https://appliance.example.internal:$https_port/readyz"
hsts() { curl_vm -D - -o /dev/null "https://appliance.example.internal:$https_port/healthz" | grep -qi '^strict-transport-security: max-age='; }
check "HSTS header" hsts
vm systemd-analyze security appliance.service --no-pager >"$work/security.txt" 2>&1 || true
exposure=$(sed -n 's/.*Overall exposure level for appliance.service: \([0-9.]*\).*/\1/p' "$work/security.txt")
check "systemd-analyze security appliance.service, live in the VM: exposure ${exposure:-?} <= 2.0" \
  awk -v e="$exposure" 'BEGIN { exit !(e != "" && e + 0 <= 2.0) }'
output_drop() { vm nft list chain inet appliance output | grep -q 'policy drop'; }
check "nftables output policy drop" output_drop
window_closed() { ! vm nft list chain inet appliance install_window | grep -q accept; }
check "install window closed (empty chain)" window_closed
hits_before=$(wc -l <"$work/probe.hits")
egress_dropped() { ! probe_reached; }
check "egress from the VM to the probe (10.0.2.100:80) is dropped by the VM's firewall" egress_dropped
check "the probe saw no connection after the converge" test "$(wc -l <"$work/probe.hits")" -eq "$hits_before"
root_only() { vm stat -c %a "$1" | grep -qx 600; }
check "first admin password stored root-only (0600)" root_only /root/appliance-first-admin-password
check "secrets file mode 0600" root_only /etc/appliance/secrets.env
local_apt() { vm cat /etc/apt/sources.list | grep -qxF 'deb [trusted=yes] file:/srv/debian-mirror ./'; }
check "apt's only source is the local mirror disk" local_apt

# A real generation and a redaction through nginx, with an API key made on the box.
vm 'appliance-ctl appliance keys create --name deploy-test --scopes chat,pii 2>/dev/null | tail -n 1' >"$work/api-key"
api_front=(--connect "127.0.0.1:$https_port" --name appliance.example.internal --cacert "$work/ca.crt" --key-file "$work/api-key")
check_api "a chat through nginx: the answer and its privacy receipt (body and headers)" chat
check_api "a redaction through nginx: no planted identifier comes back, receipt present" redact

second_play

finish
