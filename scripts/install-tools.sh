#!/usr/bin/env bash
# Installs what the tests and `make dev` need, reusing builds cached outside the clone.
# The Temporal CLI and versitygw take minutes to build from the module proxy, so each build is
# kept under ${GITSEC_TOOL_CACHE:-~/.cache/gitsec/bin}/<name>@<version> and linked into ./bin.
set -euo pipefail

TEMPORAL_CLI_VERSION=${TEMPORAL_CLI_VERSION:-v1.5.1}
VERSITYGW_VERSION=${VERSITYGW_VERSION:-v1.8.0}
cache=${GITSEC_TOOL_CACHE:-$HOME/.cache/gitsec/bin}
root=$(cd "$(dirname "$0")/.." && pwd)
mkdir -p "$cache" "$root/bin"

install_go_tool() { # name module version
  local name=$1 module=$2 version=$3
  local cached="$cache/$name@$version"
  if [ ! -x "$cached" ]; then
    # Another clone or test run may be building the same tool: wait for it rather than build twice.
    local lock
    exec {lock}>"$cached.lock"
    if command -v flock >/dev/null 2>&1; then
      flock "$lock"
    fi
    if [ ! -x "$cached" ]; then
      echo "install-tools: building $name $version (takes a few minutes once; cached in $cache)"
      local tmp; tmp=$(mktemp -d)
      GOBIN="$tmp" go install "$module@$version"
      mv "$tmp/$name" "$cached"
      rm -rf "$tmp"
    fi
    exec {lock}>&-
  fi
  ln -sf "$cached" "$root/bin/$name"
}

need_apt=()
command -v git >/dev/null 2>&1 || need_apt+=(git)
if ! command -v initdb >/dev/null 2>&1 && ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
  need_apt+=(postgresql)
fi
# The dashboard's browser tests drive Debian's Chromium headless; `make dev` does not need it.
if [ "${1:-}" != "--dev-only" ] && ! command -v chromium >/dev/null 2>&1 && [ -z "${GITSEC_CHROMIUM:-}" ]; then
  need_apt+=(chromium)
fi
if [ ${#need_apt[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then
    echo "install-tools: apt-get install ${need_apt[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}"
  else
    echo "install-tools: missing ${need_apt[*]}; install them (apt-get install ${need_apt[*]}) or run as root" >&2
    exit 1
  fi
fi

install_go_tool temporal github.com/temporalio/cli/cmd/temporal "$TEMPORAL_CLI_VERSION"
if [ "${1:-}" != "--dev-only" ]; then
  install_go_tool versitygw github.com/versity/versitygw/cmd/versitygw "$VERSITYGW_VERSION"
fi
