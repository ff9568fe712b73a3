#!/usr/bin/env bash
# Build the offline bundle for air-gapped sites: one tar holding a wheelhouse for the target
# (Debian 12, CPython 3.11, x86_64; llama.cpp built portable, without -march=native), the GGUF
# models, the spaCy model wheel, the built static assets, the templates and policy packs,
# SHA256SUMS and a CycloneDX SBOM. The playbook installs from it with pip --no-index.
#
# Environment: BUNDLE_OUT (default var/bundle), BUNDLE_SPACY_WHEEL (an extra spaCy model wheel,
# e.g. en_core_web_lg, for production; the configured model must be in the wheelhouse).
set -euo pipefail
cd "$(dirname "$0")/../.."
started=$(date +%s)
py=.venv/bin/python
out=${BUNDLE_OUT:-var/bundle}
cache=var/ansible-cache
llama_version=$(sed -n 's/^llama[-_]cpp[-_]python==//p' constraints.txt)
version=$(sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml)

# 1. llama.cpp, portable: the wheel pip builds by default uses -march=native of the build host and
# crashes on other CPUs (SIGILL on an older one; SIGSEGV in the AMX kernels on Intel CPUs that
# advertise AMX). The Makefile passes its portable flags and wheel directory (the one
# `make install` uses, so it is built once, about 6 minutes on two cores); never pip's own cache,
# which ignores CMAKE_ARGS.
portable_args=${LLAMA_PORTABLE_ARGS:--DGGML_NATIVE=OFF -DGGML_AVX512=OFF -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF}
portable_wheels=${LLAMA_PORTABLE_WHEELS:-$cache/wheels-portable}
mkdir -p "$portable_wheels"
if ! ls "$portable_wheels"/llama_cpp_python-"$llama_version"-*.whl >/dev/null 2>&1; then
  echo "building llama-cpp-python $llama_version portable (GGML_NATIVE=OFF)..."
  CMAKE_ARGS="$portable_args" "$py" -m pip wheel --no-deps --no-cache-dir \
    -w "$portable_wheels" "llama-cpp-python==$llama_version"
fi
llama_wheel=$(ls "$portable_wheels"/llama_cpp_python-"$llama_version"-*.whl)

stage="$out/stage/appliance-bundle"
rm -rf "$out/stage"
mkdir -p "$stage"/{wheelhouse,models,share}

# 2. The wheelhouse: the appliance and every dependency, at the versions CI tests (constraints.txt).
# The portable llama.cpp wheel is named by its file so no natively built one can stand in for it.
"$py" -m pip wheel --quiet -c constraints.txt -w "$stage/wheelhouse" . "$llama_wheel"
cmp "$llama_wheel" "$stage/wheelhouse/$(basename "$llama_wheel")"
# The wheel pip resolves for the build tools, so the target's fresh venv needs nothing else.
"$py" -m pip download --quiet --no-deps -d "$stage/wheelhouse" pip setuptools wheel
if [[ -n ${BUNDLE_SPACY_WHEEL:-} ]]; then
  cp "$BUNDLE_SPACY_WHEEL" "$stage/wheelhouse/"
fi
{
  echo "appliance==$version"
  echo "llama-cpp-python==$llama_version"
  if [[ -n ${BUNDLE_SPACY_WHEEL:-} ]]; then
    basename "$BUNDLE_SPACY_WHEEL" | sed 's/-\([^-]*\)-.*/==\1/'
  fi
} >"$stage/requirements.txt"

# 3. Models (assembled and SHA-256 checked by `appliance models install`), assets, policies.
cp var/models/*.gguf "$stage/models/"
mkdir -p "$stage/share/web"
cp -r web/templates "$stage/share/web/templates"
cp -r web/static "$stage/share/web/static"
test -f "$stage/share/web/static/vendor/htmx.min.js" || { echo "static assets not built" >&2; exit 1; }
cp -r policies "$stage/share/policies"

# 4. What is inside, and proof of it.
"$py" ansible/scripts/sbom.py "$stage" "$version" web/package-lock.json >"$stage/sbom.cdx.json"
( cd "$stage" && find . -type f ! -name SHA256SUMS -printf '%P\n' | LC_ALL=C sort | xargs -d '\n' sha256sum >SHA256SUMS )
bundle_id=$(sha256sum "$stage/SHA256SUMS" | cut -c1-12)
name="appliance-bundle-$version-$bundle_id"
printf '{"name": "%s", "version": "%s", "llama_cpp_python": "%s", "python": "cp311", "platform": "linux_x86_64 (Debian 12)"}\n' \
  "$name" "$version" "$llama_version" >"$stage/bundle.json"
mv "$stage" "$out/stage/$name"
rm -f "$out"/appliance-bundle-*.tar "$out"/appliance-bundle-*.tar.sha256
tar -C "$out/stage" -cf "$out/$name.tar" "$name"
( cd "$out" && sha256sum "$name.tar" >"$name.tar.sha256" )
rm -rf "$out/stage"
ln -sfn "$name.tar" "$out/appliance-bundle.tar"
echo "bundle: $out/$name.tar ($(du -h "$out/$name.tar" | cut -f1), $(( $(date +%s) - started )) s)"
