#!/usr/bin/env bash
# web-vendor.sh: refresh the web client's vendored mqtt.js browser bundle
# (clients/web/static/vendor/) from npm at the pinned version, check the
# package against npm's recorded integrity, and record the file's SHA-256
# in clients/web/vendor.sum (which a Go test holds the tree to).
#   MQTT_JS_VERSION=5.16.0 scripts/web-vendor.sh
set -euo pipefail
VERSION=${MQTT_JS_VERSION:-5.16.0}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
W=$(mktemp -d)
trap 'rm -rf "$W"' EXIT
cd "$W"
npm pack --silent "mqtt@$VERSION" >/dev/null
want=$(npm view "mqtt@$VERSION" dist.integrity)
got="sha512-$(openssl dgst -sha512 -binary "mqtt-$VERSION.tgz" | base64 -w0)"
if [ "$want" != "$got" ]; then
  echo "mqtt@$VERSION: package integrity $got, npm says $want" >&2
  exit 1
fi
tar xzf "mqtt-$VERSION.tgz"
out=$ROOT/clients/web/static/vendor
cp package/dist/mqtt.esm.js "$out/mqtt.esm.js"
cp package/LICENSE.md "$out/LICENSE-mqtt.txt"
sum=$(sha256sum "$out/mqtt.esm.js" | cut -d' ' -f1)
printf 'mqtt %s %s vendor/mqtt.esm.js sha256:%s\n' "$VERSION" "$want" "$sum" >"$ROOT/clients/web/vendor.sum"
cat "$ROOT/clients/web/vendor.sum"
