#!/usr/bin/env bash
# Build a bare Debian 12 system for the converge tests: debootstrap from Debian's mirror, an SSH
# server accepting one throwaway key for root, nothing else: the playbook must bring the rest.
# Needs root, debootstrap and e2fsprogs.
#
#   build-vm-image.sh DIR            a disk image for QEMU (test-deploy.sh): DIR/base.raw with a
#                                    kernel, and a static address for QEMU's user-mode network
#                                    (mkfs.ext4 -d fills the file system from a directory, so no
#                                    loop device is needed)
#   build-vm-image.sh DIR container  a root directory for systemd-nspawn (test-deploy-multi.sh):
#                                    DIR/rootfs, no kernel (containers share the host's); each
#                                    container gets its own copy, address and name when it is made
set -euo pipefail
out=${1:?usage: build-vm-image.sh OUTPUT_DIR [vm|container]}
kind=${2:-vm}
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
mkdir -p "$out"
out=$(cd "$out" && pwd)
root=$out/rootfs
if [[ $kind == container ]]; then
  if [[ -f $root/.complete && -f $out/id_ed25519 ]]; then echo "root directory present: $root"; exit 0; fi
  include=systemd,systemd-sysv,dbus,openssh-server,iproute2,ca-certificates,apt-transport-https
elif [[ $kind == vm ]]; then
  if [[ -f $out/base.raw && -f $out/vmlinuz && -f $out/initrd.img && -f $out/id_ed25519 ]]; then
    echo "image present: $out/base.raw"
    exit 0
  fi
  include=systemd,systemd-sysv,udev,linux-image-amd64,openssh-server,iproute2,ca-certificates,apt-transport-https,initramfs-tools,kmod
else
  echo "usage: build-vm-image.sh OUTPUT_DIR [vm|container]" >&2; exit 2
fi
rm -rf "$root"
started=$(date +%s)
debootstrap --variant=minbase --include="$include" bookworm "$root" "$mirror"
echo "debootstrap: $(( $(date +%s) - started )) s"

echo appliance-vm >"$root/etc/hostname"
printf '127.0.0.1 localhost\n127.0.1.1 appliance-vm\n' >"$root/etc/hosts"
if [[ $kind == vm ]]; then
  printf '/dev/vda / ext4 defaults 0 1\n' >"$root/etc/fstab"
  # QEMU's user-mode network: 10.0.2.2 is the host side, 10.0.2.3 its DNS forwarder.
  mkdir -p "$root/etc/systemd/network"
  cat >"$root/etc/systemd/network/10-eth.network" <<NET
[Match]
Name=en* eth*

[Network]
Address=10.0.2.15/24
Gateway=10.0.2.2
NET
  printf 'nameserver 10.0.2.3\n' >"$root/etc/resolv.conf"
fi
chroot "$root" systemctl enable systemd-networkd ssh >/dev/null 2>&1
printf 'deb %s bookworm main\ndeb %s bookworm-updates main\ndeb http://deb.debian.org/debian-security bookworm-security main\n' \
  "$mirror" "$mirror" >"$root/etc/apt/sources.list"
# Root logs in with this throwaway key only (the playbook's SSH hardening keeps it that way).
rm -f "$out/id_ed25519" "$out/id_ed25519.pub"
ssh-keygen -q -t ed25519 -N '' -C appliance-vm-test -f "$out/id_ed25519"
install -d -m 0700 "$root/root/.ssh"
install -m 0600 "$out/id_ed25519.pub" "$root/root/.ssh/authorized_keys"
chroot "$root" passwd -l root >/dev/null
chroot "$root" apt-get clean
if [[ $kind == container ]]; then
  touch "$root/.complete"
  echo "root directory built in $(( $(date +%s) - started )) s: $root"
  exit 0
fi
# Serial console, so the boot log can be read from a file.
chroot "$root" systemctl enable serial-getty@ttyS0.service >/dev/null 2>&1 || true
cp -L "$root/vmlinuz" "$out/vmlinuz"
cp -L "$root/initrd.img" "$out/initrd.img"
rm -f "$out/base.raw"
mkfs.ext4 -q -F -L root -d "$root" "$out/base.raw" 12G
rm -rf "$root"
echo "image built in $(( $(date +%s) - started )) s: $out/base.raw"
