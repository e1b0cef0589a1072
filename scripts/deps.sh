#!/usr/bin/env bash
# Installs what building and testing Augur needs on a Debian machine, idempotently:
# a Go toolchain (from the Go module proxy when the machine has none recent enough), the Go
# modules, the PostgreSQL server (Debian's package, for pgserver) and XGBoost's C library
# (Debian's libxgboost-dev, for the trainer's cgo binding trainer/xgb). Prints the directory
# holding the go binary to use, last, on stdout; everything else goes to stderr.
set -euo pipefail
cd "$(dirname "$0")/.."

want=$(awk '/^go /{print $2}' go.mod)
have_ok() { # is "$1" a go binary at least as new as go.mod asks?
  local v
  v=$("$1" env GOVERSION 2>/dev/null | sed 's/^go//') || return 1
  [ "$(printf '%s\n%s\n' "$want" "$v" | sort -V | head -1)" = "$want" ]
}

gobin=""
for cand in "$(command -v go 2>/dev/null || true)" /usr/local/go/bin/go "$PWD/.cache/go/bin/go"; do
  if [ -n "$cand" ] && [ -x "$cand" ] && have_ok "$cand"; then gobin=$cand; break; fi
done

if [ -z "$gobin" ]; then
  # The Go toolchain is published as a module on the Go module proxy.
  for tool in curl unzip; do
    if ! command -v "$tool" >/dev/null; then
      sudo_cmd=""; [ "$(id -u)" = 0 ] || sudo_cmd="sudo"
      $sudo_cmd apt-get update -qq && $sudo_cmd apt-get install -y -qq "$tool" >&2
    fi
  done
  arch=$(dpkg --print-architecture 2>/dev/null || echo amd64)
  proxy=$(echo "${GOPROXY:-https://proxy.golang.org}" | cut -d, -f1)
  zip=".cache/go-$want.zip"
  mkdir -p .cache
  echo "deps: downloading Go $want from the module proxy" >&2
  curl -fsSL -o "$zip" "$proxy/golang.org/toolchain/@v/v0.0.1-go$want.linux-$arch.zip"
  rm -rf .cache/go .cache/go-unpack && mkdir -p .cache/go-unpack
  unzip -q "$zip" -d .cache/go-unpack
  mv ".cache/go-unpack/golang.org/toolchain@v0.0.1-go$want.linux-$arch" .cache/go
  chmod +x .cache/go/bin/* .cache/go/pkg/tool/*/* 2>/dev/null || true
  rm -rf .cache/go-unpack "$zip"
  gobin="$PWD/.cache/go/bin/go"
fi

# PostgreSQL server binaries, for pgserver: the throw-away database of `make demo` and of the
# tests that use Postgres. Looked for where pgserver looks (pg_config --bindir, Debian's
# /usr/lib/postgresql/N/bin, PATH); installed with apt only when none has initdb and postgres.
have_pg_server() {
  local d
  for d in "$(pg_config --bindir 2>/dev/null || true)" /usr/lib/postgresql/*/bin; do
    if [ -n "$d" ] && [ -x "$d/initdb" ] && [ -x "$d/postgres" ]; then return 0; fi
  done
  command -v initdb >/dev/null 2>&1 && command -v postgres >/dev/null 2>&1
}
sudo_cmd=""; [ "$(id -u)" = 0 ] || sudo_cmd="sudo"
apt_install() { $sudo_cmd env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >&2; }
apt_updated=""
apt_update() { [ -n "$apt_updated" ] || { $sudo_cmd apt-get update -qq >&2; apt_updated=1; }; }
if ! have_pg_server; then
  echo "deps: installing PostgreSQL (initdb not found)" >&2
  apt_update
  apt_install postgresql-15 || apt_install postgresql
  have_pg_server || { echo "deps: PostgreSQL installed but initdb/postgres still not found" >&2; exit 1; }
fi

# XGBoost 1.7's C API (xgboost/c_api.h, -lxgboost), for trainer/xgb; installed with apt only
# when the header or the library is missing. The picker itself never links it.
have_xgboost() {
  local f
  [ -f /usr/include/xgboost/c_api.h ] || return 1
  for f in /usr/lib/*/libxgboost.so /usr/lib/libxgboost.so /usr/local/lib/libxgboost.so; do
    [ -e "$f" ] && return 0
  done
  return 1
}
if ! have_xgboost; then
  echo "deps: installing XGBoost (libxgboost-dev not found)" >&2
  apt_update
  apt_install libxgboost-dev
  have_xgboost || { echo "deps: libxgboost-dev installed but xgboost/c_api.h or libxgboost.so still not found" >&2; exit 1; }
fi

"$gobin" mod download >&2
dirname "$gobin"
