#!/usr/bin/env bash
# The real converge: boot a bare Debian 12 VM (built by build-vm-image.sh) under QEMU, run the
# playbook against it over SSH with the single-box inventory and the offline bundle, then check
# what a hardened appliance must be, and run the playbook a second time expecting no change.
#
# Network: the VM sits on QEMU's user-mode network; SSH and HTTPS are forwarded from 127.0.0.1
# only. The VM reaches nothing but Debian's mirror, and only while the base role installs
# packages; the Python side comes from the bundle with pip --no-index. Ollama is not installed
# (ollama_enabled=false: its binary cannot be downloaded here); the embedded llama.cpp backend
# serves the bundled models.
#
# Results (times, exposure score, idempotence) go to ansible/tests/DEPLOY-RESULTS.md.
set -euo pipefail
cd "$(dirname "$0")/../.."
repo=$(pwd)
work=var/ansible-cache/vm
venv=var/ansible-venv
bundle=${BUNDLE:-var/bundle/appliance-bundle.tar}
ssh_port=${VM_SSH_PORT:-2222}
https_port=${VM_HTTPS_PORT:-8443}
results=ansible/tests/DEPLOY-RESULTS.md
log=var/ansible-cache/test-deploy.log
t0=$(date +%s)
declare -a report=()
note() { echo "== $*"; report+=("$*"); }
elapsed() { echo $(( $(date +%s) - $1 )); }

for tool in qemu-system-x86_64 qemu-img debootstrap mkfs.ext4 ssh curl; do
  command -v "$tool" >/dev/null || {
    apt-get install -y -qq --no-install-recommends qemu-system-x86 qemu-utils debootstrap e2fsprogs openssh-client curl >/dev/null
    break
  }
done
test -x "$venv/bin/ansible-playbook" || { python3 -m venv "$venv" && "$venv/bin/pip" install -q -r ansible/requirements.txt; }
test -f "$bundle" || { echo "no bundle at $bundle: run make bundle" >&2; exit 1; }

s=$(date +%s)
bash ansible/tests/build-vm-image.sh "$work"
note "image ready (built or cached): $(elapsed "$s") s"

# A fresh copy-on-write disk on top of the bare image, so every run starts from bare.
rm -f "$work/run.qcow2" "$work/console.log"
qemu-img create -q -f qcow2 -b base.raw -F raw "$work/run.qcow2"
# Software emulation by default: on this project's machines /dev/kvm exists but a KVM guest
# never starts (nested virtualisation; "failed to set MSR 0x10a" with -cpu host, silence with
# other models). VM_ACCEL=kvm uses KVM where it works.
if [[ ${VM_ACCEL:-tcg} == kvm ]]; then accel=(-enable-kvm -cpu host); accel_name=KVM
else accel=(-accel tcg,thread=multi -cpu max); accel_name="TCG (software emulation)"; fi
qemu-system-x86_64 "${accel[@]}" -m 6144 -smp 2 -display none -daemonize \
  -pidfile "$work/qemu.pid" -serial "file:$work/console.log" \
  -kernel "$work/vmlinuz" -initrd "$work/initrd.img" -append "root=/dev/vda rw console=ttyS0" \
  -drive "file=$work/run.qcow2,if=virtio,format=qcow2" \
  -netdev "user,id=n0,hostfwd=tcp:127.0.0.1:$ssh_port-:22,hostfwd=tcp:127.0.0.1:$https_port-:443" \
  -device virtio-net-pci,netdev=n0
trap 'kill "$(cat "$work/qemu.pid")" 2>/dev/null || true' EXIT
note "VM booting under $accel_name"

ssh_opts=(-i "$work/id_ed25519" -p "$ssh_port" -o UserKnownHostsFile="$work/known_hosts"
  -o StrictHostKeyChecking=accept-new -o ConnectTimeout=5 -o BatchMode=yes)
rm -f "$work/known_hosts"
vm() { ssh "${ssh_opts[@]}" root@127.0.0.1 "$@"; }
s=$(date +%s)
until vm true 2>/dev/null; do
  (( $(date +%s) - s < 900 )) || { echo "VM did not answer SSH in 900 s" >&2; tail -20 "$work/console.log"; exit 1; }
  sleep 3
done
note "SSH up after $(elapsed "$s") s"

play() {
  ANSIBLE_CONFIG=ansible/ansible.cfg ANSIBLE_SSH_ARGS="-o UserKnownHostsFile=$repo/$work/known_hosts -o StrictHostKeyChecking=yes" \
    "$venv/bin/ansible-playbook" -i ansible/inventories/single-box ansible/site.yml \
    -e ansible_host=127.0.0.1 -e "ansible_port=$ssh_port" -e ansible_user=root \
    -e "ansible_ssh_private_key_file=$repo/$work/id_ed25519" \
    -e ollama_enabled=false -e "appliance_bundle_file=$repo/$bundle" "$@"
}

s=$(date +%s)
play | tee "$log"
first_recap=$(grep -A1 "PLAY RECAP" "$log" | tail -1)
note "first converge (bare to running): $(elapsed "$s") s — $first_recap"

failures=0
check() {
  local what=$1; shift
  if "$@"; then note "PASS $what"; else note "FAIL $what"; failures=$((failures + 1)); fi
}
check "services active (appliance nginx nftables chrony ssh)" vm systemctl is-active appliance nginx nftables chrony ssh
# Inside the VM with Python's TLS client (the appliance has no curl), checking the certificate.
check "/readyz through nginx inside the VM" vm python3 -c "'import ssl, urllib.request as u; ctx = ssl.create_default_context(cafile=\"/etc/appliance-ca/ca.crt\"); ctx.check_hostname = False; print(u.urlopen(\"https://127.0.0.1/readyz\", context=ctx, timeout=30).read().decode())'"
vm cat /etc/appliance-ca/ca.crt >"$work/ca.crt"
check "/readyz through nginx from the host (127.0.0.1:$https_port forwarded)" \
  curl -fsS --cacert "$work/ca.crt" --resolve "appliance.example.internal:$https_port:127.0.0.1" "https://appliance.example.internal:$https_port/readyz"
check "HSTS header" bash -c "curl -sS -D - -o /dev/null --cacert $work/ca.crt --resolve appliance.example.internal:$https_port:127.0.0.1 https://appliance.example.internal:$https_port/healthz | grep -qi '^strict-transport-security: max-age='"
exposure=$(vm systemd-analyze security appliance.service --no-pager | sed -n 's/.*Overall exposure level for appliance.service: \([0-9.]*\).*/\1/p')
vm systemd-analyze security appliance.service --no-pager >"$work/security.txt" || true
check "systemd-analyze security exposure $exposure <= 2.0" awk -v e="$exposure" 'BEGIN { exit !(e != "" && e <= 2.0) }'
check "nftables output policy drop" bash -c "ssh ${ssh_opts[*]} root@127.0.0.1 nft list chain inet appliance output | grep -q 'policy drop'"
check "install window closed (empty chain)" bash -c "! ssh ${ssh_opts[*]} root@127.0.0.1 nft list chain inet appliance install_window | grep -q accept"
# An egress attempt from the VM to Debian's mirror (the one outside address the VM ever may
# reach, during installs) is dropped by the VM's own firewall: nothing leaves the VM.
mirror_ip=$(getent ahostsv4 deb.debian.org | awk 'NR == 1 { print $1 }')
check "egress from the VM to $mirror_ip:80 is dropped" bash -c "! ssh ${ssh_opts[*]} root@127.0.0.1 timeout 5 bash -c '\"</dev/tcp/$mirror_ip/80\"' 2>/dev/null"
check "first admin password stored root-only" bash -c "ssh ${ssh_opts[*]} root@127.0.0.1 stat -c %a /root/appliance-first-admin-password | grep -qx 600"
check "secrets file mode 0600" bash -c "ssh ${ssh_opts[*]} root@127.0.0.1 stat -c %a /etc/appliance/secrets.env | grep -qx 600"

s=$(date +%s)
play | tee "$log.second"
second_recap=$(grep -A1 "PLAY RECAP" "$log.second" | tail -1)
note "second run: $(elapsed "$s") s — $second_recap"
check "second run changed=0" bash -c "grep -A1 'PLAY RECAP' $log.second | tail -1 | grep -q 'changed=0 .*failed=0'"

note "total: $(elapsed "$t0") s, failures: $failures"
{
  echo "# make test-deploy: last run"
  echo
  echo "Run on $(date -u '+%Y-%m-%d %H:%M UTC'), VM under $accel_name, 2 vCPUs, 6 GiB; ollama_enabled=false"
  echo "(the Ollama binary cannot be downloaded here: the embedded llama.cpp backend serves)."
  echo
  for line in "${report[@]}"; do echo "- $line"; done
  echo
  echo '```'
  grep -E "Overall exposure|^✗" "$work/security.txt" | head -40 || true
  echo '```'
} >"$results"
echo "results in $results"
exit $(( failures > 0 ))
