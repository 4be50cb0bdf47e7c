#!/usr/bin/env node
// After `npm ci` in a clone of this repository, put `dalle` into node_modules/.bin so that `npx dalle ...` runs this
// checkout (npm links bins of dependencies, not of the project itself). Installed as a dependency, it does nothing.
'use strict';
const fs = require('fs');
const path = require('path');

const root = path.resolve(__dirname, '..');
if (path.basename(path.dirname(root)) === 'node_modules' || path.basename(path.dirname(path.dirname(root))) === 'node_modules') {
  process.exit(0);
}
const binDir = path.join(root, 'node_modules', '.bin');
const link = path.join(binDir, 'dalle');
try {
  fs.mkdirSync(binDir, { recursive: true });
  try {
    fs.unlinkSync(link);
  } catch {
    // not there yet
  }
  fs.symlinkSync(path.relative(binDir, path.join(root, 'bin', 'run.js')), link);
} catch (err) {
  console.warn(`dalle: could not link node_modules/.bin/dalle (${err.message}); use ./bin/run.js instead of npx dalle`);
}
