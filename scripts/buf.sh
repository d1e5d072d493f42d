#!/usr/bin/env bash
# Lints the API contract with buf, and once a v1 exists in the previous
# commit, checks this commit does not break it. buf comes from the npm package
# @bufbuild/buf (pinned), installed into .tools/ on first use.
set -euo pipefail
cd "$(dirname "$0")/.."
BUF_VERSION=1.75.0
BUF=.tools/node_modules/.bin/buf

if [ ! -x "$BUF" ] || [ "$("$BUF" --version 2>/dev/null)" != "$BUF_VERSION" ]; then
  if ! command -v npm >/dev/null; then
    if [ "$(id -u)" = 0 ]; then
      DEBIAN_FRONTEND=noninteractive apt-get update -qq && apt-get install -y -qq nodejs npm >/dev/null
    else
      echo "buf needs npm (Debian: sudo apt-get install -y nodejs npm)" >&2; exit 1
    fi
  fi
  mkdir -p .tools
  npm install --silent --no-audit --no-fund --prefix .tools "@bufbuild/buf@$BUF_VERSION" >/dev/null 2>&1
fi

(cd proto && "../$BUF" lint)
echo "buf lint: ok"

if git rev-parse -q --verify HEAD~1 >/dev/null && git cat-file -e HEAD~1:proto/buf.yaml 2>/dev/null; then
  (cd proto && "../$BUF" breaking --against "../.git#ref=HEAD~1,subdir=proto")
  echo "buf breaking against HEAD~1: ok"
else
  echo "buf breaking: skipped (no v1 in the previous commit)"
fi
