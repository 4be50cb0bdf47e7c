// Lists the addon's C++ sources for binding.gyp, so adding a kernel file needs no edit there.
// base: native/src/*.cc and native/cpu/*.cc that are not ISA-specific; avx2 / avx512: native/cpu/*_<isa>.cc.
'use strict';
const fs = require('fs');
const path = require('path');
const kind = process.argv[2] || 'base';
const isaOf = (f) => (f.endsWith('_avx512.cc') ? 'avx512' : f.endsWith('_avx2.cc') ? 'avx2' : 'base');
const out = [];
// native/cuda/shared: the CUDA backend's host logic (tile plans, launch shapes), tested on every machine.
for (const dir of ['native/src', 'native/cpu', 'native/cuda/shared']) {
  const abs = path.join(__dirname, '..', dir);
  if (!fs.existsSync(abs)) continue;
  for (const f of fs.readdirSync(abs).sort()) {
    if (f.endsWith('.cc') && isaOf(f) === kind) out.push(`${dir}/${f}`);
  }
}
// gyp needs at least one source in a static library.
if (out.length === 0 && kind !== 'base') out.push(`native/src/empty_${kind}.c`);
process.stdout.write(out.join(' '));
