// Mocha settings. `npm test` (plain `mocha`) runs every compiled test; `npx mocha dist/test/x.test.js` runs only the
// files named. (A `spec` in a .mocharc.json would be added to the files named, so one file could not be run alone.)
'use strict';

const namesTestFiles = process.argv.slice(2).some((arg) => !arg.startsWith('-') && /\.[cm]?js$/.test(arg));

module.exports = {
  spec: namesTestFiles ? [] : ['dist/test/**/*.test.js'],
  timeout: 60000,
  reporter: 'spec',
};
