#!/usr/bin/env bash
# Builds the Debian package of ferry (cargo-deb, pinned; installed if
# missing): the release binary, bash/zsh/fish completions, the man page, a
# systemd unit (ferry serve as the `ferry` system user, state in
# /var/lib/ferry) and /etc/default/ferry.
#
#   scripts/package.sh            build target/debian/ferry_*.deb
#   scripts/package.sh --check    also install it (dpkg -i, needs root), run
#                                 `ferry --version` and one copy with the
#                                 installed binary, then remove it
set -euo pipefail
cd "$(dirname "$0")/.."
CARGO_DEB_VERSION=3.8.0
target="${CARGO_TARGET_DIR:-target}"

if ! cargo deb --version 2>/dev/null | grep -q "$CARGO_DEB_VERSION"; then
  echo "package.sh: installing cargo-deb $CARGO_DEB_VERSION" >&2
  cargo install cargo-deb --locked --version "$CARGO_DEB_VERSION" >&2
fi

cargo build --release --locked -p ferry
bin="$target/release/ferry"
gen=packaging/generated
rm -rf "$gen"
mkdir -p "$gen"
"$bin" completions bash > "$gen/ferry.bash"
"$bin" completions zsh > "$gen/_ferry"
"$bin" completions fish > "$gen/ferry.fish"
"$bin" manpage | gzip -9n > "$gen/ferry.1.gz"

deb=$(cargo deb -p ferry --no-build --locked 2>/dev/null | tail -1)
[ -f "$deb" ] || { echo "package.sh: cargo deb made no package" >&2; exit 1; }
echo "$deb"

if [ "${1:-}" = "--check" ]; then
  dpkg -i "$deb" >&2
  trap 'dpkg --purge ferry >/dev/null 2>&1 || true' EXIT
  version=$(/usr/bin/ferry --version)
  echo "package.sh: installed: $version" >&2
  commit=$(git rev-parse --short=12 HEAD 2>/dev/null || echo unknown)
  case "$version" in
    *"$commit"*) ;;
    *) echo "package.sh: --version does not name commit $commit: $version" >&2; exit 1 ;;
  esac
  for f in /usr/share/man/man1/ferry.1.gz /usr/share/bash-completion/completions/ferry \
           /lib/systemd/system/ferry.service /etc/default/ferry; do
    [ -s "$f" ] || { echo "package.sh: $f missing from the package" >&2; exit 1; }
  done
  getent passwd ferry >/dev/null || { echo "package.sh: no ferry system user" >&2; exit 1; }
  work=$(mktemp -d)
  printf 'installed ferry works\n' > "$work/in.txt"
  want=$(sha256sum < "$work/in.txt" | cut -d' ' -f1)
  /usr/bin/ferry copy "$work/in.txt" "$work/out/" --no-checkpoint --sha256 "$want" --json > "$work/result.json"
  cmp "$work/in.txt" "$work/out/in.txt"
  grep -q '"status":"ok"' "$work/result.json"
  rm -rf "$work"
  echo "package.sh: the installed binary copied and verified a file" >&2
fi
