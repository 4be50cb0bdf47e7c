#!/usr/bin/env node
// The `dalle` executable: oclif finds package.json above this directory and loads the compiled commands from
// dist/src/commands (run `npm run build` first).
'use strict';

void (async () => {
  const oclif = require('@oclif/core');
  await oclif.execute({ dir: __dirname });
})();
