#!/usr/bin/env node
// Builds the Gloo collective addon, build/Release/dalle_collective.node (native/collective), when Gloo's headers and
// library are found; binding.gyp runs it as the `dalle_collective` target of `node-gyp rebuild` (so `npm ci` builds
// it). Separate from dalle_native.node so that the main addon never depends on libgloo.
//
//   DALLE_COLLECTIVE=0    never build it (and say so);
//   DALLE_COLLECTIVE=1    build it, and fail when Gloo is missing;
//   unset                 build it when gloo/allreduce.h is found, skip with a message otherwise.
//   DALLE_GLOO_INCLUDE    the directory holding gloo/ (default: pkg-config gloo, then /usr/include, /usr/local/include)
//   DALLE_GLOO_LIB        the directory holding libgloo.so (default: pkg-config gloo, then the usual lib directories);
//                         the addon records it as its run path
//
// It writes <out>/dalle_collective.json ({ built, reason, ... }) either way; src/core/distributed/gloo.ts reads it to
// say why the addon is missing.
//
// Usage: node native/collective/build.js [--out DIR] [--node-include DIR] [--napi-include DIR] [--list-inputs]
'use strict';
const fs = require('fs');
const path = require('path');
const { execFileSync, spawnSync } = require('child_process');

const here = __dirname;
const root = path.resolve(here, '..', '..');
const SOURCES = ['addon.cc', 'group.cc', 'gloo_store.cc', 'liveness.cc', 'store_client.cc', 'store_server.cc', 'net.cc'];
const HEADERS = ['group.h', 'gloo_store.h', 'liveness.h', 'store_client.h', 'store_server.h', 'net.h', 'wire.h', 'napi_args.h'];

function arg(name, fallback) {
  const i = process.argv.indexOf(name);
  return i >= 0 && i + 1 < process.argv.length ? process.argv[i + 1] : fallback;
}

if (process.argv.includes('--list-inputs')) {
  // For binding.gyp: paths relative to the package root.
  process.stdout.write([...SOURCES, ...HEADERS, 'build.js'].map((f) => `native/collective/${f}`).join(' '));
  process.exit(0);
}

const out = path.resolve(arg('--out', path.join(root, 'build', 'Release')));

function writeReport(report) {
  fs.mkdirSync(out, { recursive: true });
  const file = path.join(out, 'dalle_collective.json');
  const tmp = `${file}.tmp-${process.pid}`;
  fs.writeFileSync(tmp, JSON.stringify(report, null, 2) + '\n');
  fs.renameSync(tmp, file);
}

function skip(reason) {
  console.log(`dalle: Gloo collective addon not built: ${reason}`);
  fs.rmSync(path.join(out, 'dalle_collective.node'), { force: true });
  writeReport({ built: false, reason });
  process.exit(0);
}

function fail(reason) {
  console.error(`dalle: ${reason}`);
  process.exit(1);
}

// pkg-config's flags for gloo, or null (Debian's libgloo-dev ships no .pc file; a source build may).
function pkgConfig(flag) {
  try {
    return execFileSync('pkg-config', [flag, 'gloo'], { stdio: ['ignore', 'pipe', 'ignore'] }).toString().trim();
  } catch {
    return null;
  }
}

// A directory given in the environment is the only one tried: a wrong one is reported, not silently replaced.
function findGloo() {
  const fromPkg = (flags, prefix) => (flags || '').split(/\s+/).filter((f) => f.startsWith(prefix)).map((f) => f.slice(2));
  const includes = process.env.DALLE_GLOO_INCLUDE
    ? [process.env.DALLE_GLOO_INCLUDE]
    : [...fromPkg(pkgConfig('--cflags'), '-I'), '/usr/include', '/usr/local/include'];
  const include = includes.find((d) => fs.existsSync(path.join(d, 'gloo', 'allreduce.h')));
  const libs = process.env.DALLE_GLOO_LIB
    ? [process.env.DALLE_GLOO_LIB]
    : [...fromPkg(pkgConfig('--libs'), '-L'), '/usr/lib', '/usr/lib/x86_64-linux-gnu', '/usr/lib/aarch64-linux-gnu', '/usr/local/lib'];
  const lib = libs.find((d) => fs.existsSync(path.join(d, 'libgloo.so')));
  return { include, lib, includes, libs };
}

function main() {
  const mode = process.env.DALLE_COLLECTIVE;
  if (mode === '0') skip('DALLE_COLLECTIVE=0');
  if (process.platform !== 'linux') {
    if (mode === '1') fail(`DALLE_COLLECTIVE=1 but the Gloo addon builds on Linux only (this is ${process.platform})`);
    skip(`the Gloo addon builds on Linux only (this is ${process.platform})`);
  }
  const gloo = findGloo();
  if (!gloo.include || !gloo.lib) {
    const reason = !gloo.include
      ? `Gloo's headers (gloo/allreduce.h) not found in ${gloo.includes.join(', ')} ` +
        '(install libgloo-dev, or set DALLE_GLOO_INCLUDE and DALLE_GLOO_LIB)'
      : `libgloo.so not found in ${gloo.libs.join(', ')} (install libgloo-dev, or set DALLE_GLOO_LIB)`;
    if (mode === '1') fail(`DALLE_COLLECTIVE=1 but ${reason}`);
    skip(reason);
  }
  const nodeInclude = path.resolve(arg('--node-include', process.env.npm_config_nodedir
    ? path.join(process.env.npm_config_nodedir, 'include', 'node')
    : path.join(path.dirname(process.execPath), '..', 'include', 'node')));
  const napiInclude = path.resolve(arg('--napi-include', require('node-addon-api').include_dir));
  if (!fs.existsSync(path.join(nodeInclude, 'node_api.h'))) fail(`node's headers not found in ${nodeInclude} (pass --node-include)`);

  const started = Date.now();
  const cxx = process.env.CXX || 'g++';
  fs.mkdirSync(out, { recursive: true });
  const target = path.join(out, 'dalle_collective.node');
  const tmp = `${target}.tmp-${process.pid}`;
  // One compiler call: seven small files, no per-object cache needed.
  const args = ['-std=c++17', '-O2', '-fPIC', '-shared', '-Wall', '-fexceptions', '-pthread',
    '-DNAPI_VERSION=8', '-DNAPI_CPP_EXCEPTIONS', '-DNODE_ADDON_API_DISABLE_DEPRECATED',
    `-I${nodeInclude}`, `-I${napiInclude}`, `-I${gloo.include}`,
    ...SOURCES.map((f) => path.join(here, f)),
    '-o', tmp, `-L${gloo.lib}`, `-Wl,-rpath,${gloo.lib}`, '-lgloo', '-lpthread'];
  console.log(`dalle: building the Gloo collective addon with ${cxx} (Gloo from ${gloo.include}, ${gloo.lib})`);
  const r = spawnSync(cxx, args, { stdio: 'inherit' });
  if (r.error || r.status !== 0) {
    fs.rmSync(tmp, { force: true });
    fail(`building the Gloo collective addon failed (${r.error ? r.error.message : `${cxx} exited with ${r.status}`})\n` +
      '(DALLE_COLLECTIVE=0 npm run install skips it)');
  }
  fs.renameSync(tmp, target);
  const seconds = Math.round((Date.now() - started) / 100) / 10;
  writeReport({ built: true, reason: '', glooInclude: gloo.include, glooLib: gloo.lib, seconds });
  console.log(`dalle: Gloo collective addon built in ${seconds} s: ${target}`);
}

main();
