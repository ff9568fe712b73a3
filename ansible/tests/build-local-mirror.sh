#!/usr/bin/env bash
# The converge test's local Debian mirror: the .deb files the playbook installs on the bare VM
# (python3 and python3-apt for Ansible, the base role's packages, the app host's packages), with
# every dependency the bare image lacks, resolved against the image's own dpkg status and fetched
# on this machine with apt-get. They go into a read-only disk image (ext4, a flat repository with
# a Packages index) that the test attaches to the VM, as an air-gapped site's local mirror: the VM
# itself downloads nothing.
#
# Usage: build-local-mirror.sh VM_DIR
#   VM_DIR holds base.raw (build-vm-image.sh DIR): the mirror is VM_DIR/mirror.img, a disk;
#   VM_DIR holds rootfs (build-vm-image.sh DIR container): the mirror is the directory
#   VM_DIR/mirror, which each container mounts read-only.
set -euo pipefail
vm=${1:?usage: build-local-mirror.sh VM_DIR}
vm=$(cd "$vm" && pwd)
if [[ -f $vm/base.raw ]]; then out=$vm/mirror.img source=$vm/base.raw
else out=$vm/mirror source=$vm/rootfs/.complete; fi
# What the playbook installs on any host (site.yml's bootstrap, roles/base/defaults,
# group_vars/all.yml's base_extra_packages for app, proxy and database hosts): kept in one place,
# below, and compared with the playbook by tests/integration/test_ansible.py.
packages=(python3 python3-apt nftables netbase chrony ca-certificates openssh-server sudo
  python3-venv python3-packaging nginx openssl sqlite3 libgomp1 postgresql postgresql-client
  prometheus)
stamp=$(printf '%s\n' "${packages[@]}" | sha256sum | cut -c1-16)
if [[ -e $out && -f $vm/mirror.stamp && $(cat "$vm/mirror.stamp") == "$stamp" && $out -nt $source ]]; then
  echo "local mirror present: $out"
  exit 0
fi
started=$(date +%s)
work=$vm/mirror-build
rm -rf "$work"
mkdir -p "$work"/{lists/partial,archives/partial,repo,etc/preferences.d}
# The bare system's installed packages, read from its file system (the image's without mounting it).
if [[ -f $vm/base.raw ]]; then debugfs -R "cat /var/lib/dpkg/status" "$vm/base.raw" >"$work/status" 2>/dev/null
else cp "$vm/rootfs/var/lib/dpkg/status" "$work/status"; fi
grep -q '^Package: systemd$' "$work/status" || { echo "cannot read dpkg status from $source" >&2; exit 1; }
# Debian 12's repositories only (the image's sources), independent of this host's apt setup.
cat >"$work/etc/sources.list" <<'SRC'
deb http://deb.debian.org/debian bookworm main
deb http://deb.debian.org/debian bookworm-updates main
deb http://deb.debian.org/debian-security bookworm-security main
SRC
apt_opts=(-o "Dir::State::status=$work/status" -o "Dir::State::Lists=$work/lists"
  -o "Dir::Cache::archives=$work/archives" -o "Dir::Cache=$work" -o "Dir::Etc::sourcelist=$work/etc/sources.list"
  -o "Dir::Etc::sourceparts=-" -o "Dir::Etc::preferencesparts=$work/etc/preferences.d"
  -o "APT::Architecture=amd64" -o "APT::Install-Recommends=false" -o "Debug::NoLocking=true")
apt-get "${apt_opts[@]}" -qq update
apt-get "${apt_opts[@]}" -y -qq --download-only install "${packages[@]}"
mv "$work"/archives/*.deb "$work/repo/"
( cd "$work/repo" && dpkg-scanpackages --multiversion . /dev/null 2>/dev/null >Packages )
count=$(grep -c '^Package:' "$work/repo/Packages")
size=$(du -sm "$work/repo" | cut -f1)
rm -rf "$out"
if [[ $out == *.img ]]; then
  mkfs.ext4 -q -F -L debmirror -d "$work/repo" "$out" $(( size + 64 ))M
  rm -rf "$work"
else
  mv "$work/repo" "$out"
  rm -rf "$work"
fi
echo "$stamp" >"$vm/mirror.stamp"
echo "local mirror: $count packages, $size MB in $out ($(( $(date +%s) - started )) s)"
