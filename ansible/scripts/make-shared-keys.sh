#!/usr/bin/env bash
# Make the key files every app replica must share (appliance_shared_keys_dir): the pseudonym
# vault's key and digest key, the key of hashed identifiers and the key sealing stored documents
# and history, 32 random bytes each. Run once per site on the control node, then encrypt each
# file with `ansible-vault encrypt` (the copy module decrypts them on the way to the hosts).
# Existing files are kept: replacing a key makes what was written under it unreadable.
set -euo pipefail
dir=${1:?usage: make-shared-keys.sh DIR}
umask 077
mkdir -p "$dir"
for name in vault.key vault-digest.key pii-hash.key content.key; do
  if [[ -e $dir/$name ]]; then echo "kept $dir/$name"; continue; fi
  head -c 32 /dev/urandom >"$dir/$name.tmp"
  mv "$dir/$name.tmp" "$dir/$name"
  echo "made $dir/$name"
done
