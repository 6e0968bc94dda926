#!/usr/bin/env bash
# Builds the dev Vault server (an unmodified HashiCorp Vault release, from the
# Go module proxy) into $OUT (default: <repo>/.data/bin/vault), once: the
# binary is reused while this module's go.mod and go.sum are unchanged. A cold
# build takes about 15 minutes on 2 cores; with a warm Go build cache, under 2.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
out="${OUT:-$root/.data/bin/vault}"
stamp="$out.sum"
want="$(cat "$here/go.mod" "$here/go.sum" "$here/main.go" | sha256sum | cut -d' ' -f1)"
if [ -x "$out" ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
	echo "$out"
	exit 0
fi
mkdir -p "$(dirname "$out")"
echo "devvault: building Vault into $out (cold: ~15 min; warm cache: <2 min)" >&2
start=$(date +%s)
(cd "$here" && CGO_ENABLED=0 go build -trimpath -ldflags='-s -w' -o "$out.tmp" .)
mv "$out.tmp" "$out"
echo "$want" > "$stamp"
echo "devvault: built in $(( $(date +%s) - start ))s" >&2
echo "$out"
