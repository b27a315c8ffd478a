#!/usr/bin/env bash
# Gathers kvx's evaluation text from files Debian itself ships, so that anyone with a Debian 12
# machine gets the same bytes without a download, and none of it is text we wrote.
#
# Sources (fixed order; all from Essential packages present on every debian:12 system):
#   /usr/share/doc/bash/{INTRO,POSIX}.gz            bash        (prose about the shell)
#   /usr/share/doc/gzip/README.gz                   gzip
#   /usr/share/doc/coreutils/README.gz              coreutils
#   /usr/share/common-licenses/{GPL-3,Apache-2.0,MPL-2.0,GFDL-1.3,Artistic,LGPL-2.1}
#                                                   base-files  (license texts; never change)
# .gz files are decompressed with zcat.  Each source's bytes (decompressed) are checked against
# tools/corpus.sha256; then data/corpus/eval.txt is their concatenation in the order above,
# each followed by one empty line, and is checked too.  data/corpus/ is gitignored.
#
# Usage: tools/gather-corpus.sh [OUT_DIR]      (default data/corpus; run from anywhere)
# Env:   CORPUS_ROOT=/path   read the sources under this prefix instead of / (testing)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/.." && pwd)
out=${1:-$repo/data/corpus}
root=${CORPUS_ROOT:-}
manifest=$here/corpus.sha256

# name in the manifest | path | Debian package that ships it
sources=(
  "bash-INTRO|/usr/share/doc/bash/INTRO.gz|bash"
  "bash-POSIX|/usr/share/doc/bash/POSIX.gz|bash"
  "gzip-README|/usr/share/doc/gzip/README.gz|gzip"
  "coreutils-README|/usr/share/doc/coreutils/README.gz|coreutils"
  "GPL-3|/usr/share/common-licenses/GPL-3|base-files"
  "Apache-2.0|/usr/share/common-licenses/Apache-2.0|base-files"
  "MPL-2.0|/usr/share/common-licenses/MPL-2.0|base-files"
  "GFDL-1.3|/usr/share/common-licenses/GFDL-1.3|base-files"
  "Artistic|/usr/share/common-licenses/Artistic|base-files"
  "LGPL-2.1|/usr/share/common-licenses/LGPL-2.1|base-files"
)

die() { echo "corpus: error: $*" >&2; exit 1; }

[ -f "$manifest" ] || die "manifest $manifest is missing"
expected_sha() { # name -> sha256 from the manifest ("<sha256>  <name>")
  awk -v n="$1" '$2 == n { print $1; found = 1 } END { exit !found }' "$manifest"
}

mkdir -p "$out/sources"
tmp=$(mktemp "$out/eval.txt.XXXXXX")
trap 'rm -f "$tmp"' EXIT
for entry in "${sources[@]}"; do
  IFS='|' read -r name path pkg <<<"$entry"
  src=$root$path
  [ -f "$src" ] || die "$src is missing (it comes with the Debian package '$pkg'; a -slim image strips /usr/share/doc through /etc/dpkg/dpkg.cfg.d/docker: drop that path-exclude, then apt-get install --reinstall $pkg)"
  case "$src" in
    *.gz) zcat -- "$src" >"$out/sources/$name.txt" || die "cannot decompress $src" ;;
    *)    cat -- "$src" >"$out/sources/$name.txt" ;;
  esac
  want=$(expected_sha "$name") || die "$name has no line in $manifest"
  got=$(sha256sum "$out/sources/$name.txt" | cut -d' ' -f1)
  [ "$got" = "$want" ] || die "$src (package $pkg) does not match the manifest: sha256 $got, expected $want (a different Debian release or a modified file; the fixtures in tests/fixtures were made from the pinned text)"
  cat "$out/sources/$name.txt" >>"$tmp"
  printf '\n' >>"$tmp"
done
want=$(expected_sha eval.txt) || die "eval.txt has no line in $manifest"
got=$(sha256sum "$tmp" | cut -d' ' -f1)
[ "$got" = "$want" ] || die "the concatenation has sha256 $got, expected $want (the source order or separator changed?)"
chmod 644 "$tmp"
mv "$tmp" "$out/eval.txt"
trap - EXIT
echo "corpus: $out/eval.txt ($(wc -c <"$out/eval.txt") bytes from ${#sources[@]} Debian files, sha256 $got)" >&2
