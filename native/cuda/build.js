#!/usr/bin/env node
// Builds the CUDA addon, build/Release/dalle_cuda.node, when a CUDA compiler is there; binding.gyp runs it as the
// `dalle_cuda` target of `node-gyp rebuild` (so `npm ci` builds it), after nothing and before nothing: the main addon
// never links it. Separate from dalle_native.node so that the main addon never depends on libcudart.
//
//   DALLE_CUDA=0       never build it (and say so);
//   DALLE_CUDA=1       build it, and fail when nvcc is missing;
//   unset              build it when nvcc is found ($CUDA_HOME/bin, $CUDA_PATH/bin, PATH, /usr/local/cuda/bin),
//                      skip with a message otherwise.
//   DALLE_CUDA_CACHE   where compiled objects are kept by content hash (default node_modules/.cache/dalle-cuda)
//   DALLE_CUDA_ARCH    compute capabilities, comma-separated (default 90: H100 / H200; PTX for the newest one is
//                      embedded too, so later GPUs JIT it). e.g. DALLE_CUDA_ARCH=80,90 for A100 as well.
//
// It writes <out>/dalle_cuda.json ({ built, reason, nvcc, arch, seconds }) either way; test/cuda/build.test.ts reads it.
// Links cudart statically (the addon loads on a machine without a driver and reports "no device" instead of failing
// to load) and loads cuBLASLt at run time (native/cuda/gemm.cc), so the only build requirement is nvcc + cudart.
//
// Usage: node native/cuda/build.js [--out DIR] [--node-include DIR] [--napi-include DIR] [--list-inputs]
'use strict';
const fs = require('fs');
const path = require('path');
const { execFileSync, spawn } = require('child_process');
const crypto = require('crypto');

const here = __dirname;
const root = path.resolve(here, '..', '..');
// One .cu per op family, named like its CPU counterpart in native/cpu.
const NVCC_SOURCES = ['attention.cu', 'cast.cu', 'copy.cu', 'elementwise.cu', 'adamw.cu', 'precision.cu', 'norm.cu',
  'loss.cu', 'conv.cu', 'softmax.cu', 'reduce.cu', 'embedding.cu', 'pool.cu', 'random.cu', 'dense_attention.cu', 'blas1.cu'];
const CXX_SOURCES = ['gemm.cc', 'addon.cc', 'nccl.cc', 'nccl_rendezvous.cc', 'nccl_napi.cc',
  // The rendezvous store of native/collective (no Gloo in these): NCCL's ranks meet and name faults through it.
  '../collective/store_server.cc', '../collective/store_client.cc', '../collective/net.cc', '../collective/liveness.cc'];
const HEADERS = ['attention_plan.h', 'attention_kernels.cuh', 'attention_tc_kernels.cuh', 'attention_decode_kernels.cuh',
  'tensor_core.cuh', 'cuda_ops.h', 'op_codes.h', 'common.cuh', 'grid.cuh',
  'block_reduce.cuh', 'smem_reduce.cuh', 'device_allocator.h', 'copy_kernels.cuh', 'elementwise_kernels.cuh',
  'softmax_kernels.cuh', 'reduce_kernels.cuh', 'embedding_kernels.cuh', 'pool_kernels.cuh', 'random_kernels.cuh',
  'cast_kernels.cuh', 'dense_attention_kernels.cuh', 'blas1_kernels.cuh'];
// Included by the host sources only (so editing them does not recompile the kernels).
const HOST_HEADERS = ['nccl_api.h', 'nccl.h', 'nccl_plan.h', 'nccl_watchdog.h', 'nccl_rendezvous.h',
  '../collective/store_server.h', '../collective/store_client.h', '../collective/net.h', '../collective/liveness.h',
  '../collective/wire.h', '../collective/napi_args.h'];

function arg(name, fallback) {
  const i = process.argv.indexOf(name);
  return i >= 0 && i + 1 < process.argv.length ? process.argv[i + 1] : fallback;
}

if (process.argv.includes('--list-inputs')) {
  // For binding.gyp: paths relative to the package root.
  process.stdout.write([...NVCC_SOURCES, ...CXX_SOURCES, ...HEADERS, ...HOST_HEADERS, 'build.js'].map((f) => path.posix.normalize(`native/cuda/${f}`)).join(' '));
  process.exit(0);
}

const out = path.resolve(arg('--out', path.join(root, 'build', 'Release')));
const cacheDir = process.env.DALLE_CUDA_CACHE
  ? path.resolve(process.env.DALLE_CUDA_CACHE)
  : path.join(root, 'node_modules', '.cache', 'dalle-cuda');

// True when `obj` exists, after waiting for another build that is compiling it (its .lock file, younger than an hour).
async function waitForOther(obj) {
  for (;;) {
    if (fs.existsSync(obj)) return true;
    let st;
    try {
      st = fs.statSync(`${obj}.lock`);
    } catch {
      return false;
    }
    if (Date.now() - st.mtimeMs > 3600e3) return false;
    await new Promise((r) => setTimeout(r, 2000));
  }
}

function findNvcc() {
  const dirs = [];
  for (const v of ['CUDA_HOME', 'CUDA_PATH']) if (process.env[v]) dirs.push(path.join(process.env[v], 'bin'));
  for (const d of (process.env.PATH || '').split(path.delimiter)) if (d) dirs.push(d);
  dirs.push('/usr/local/cuda/bin');
  for (const d of dirs) {
    const f = path.join(d, 'nvcc');
    try {
      fs.accessSync(f, fs.constants.X_OK);
      return fs.realpathSync(f);
    } catch {
      // next
    }
  }
  return null;
}

function writeReport(report) {
  fs.mkdirSync(out, { recursive: true });
  fs.writeFileSync(path.join(out, 'dalle_cuda.json'), JSON.stringify(report, null, 2) + '\n');
}

function skip(reason) {
  console.log(`dalle: CUDA addon not built: ${reason}`);
  try {
    fs.rmSync(path.join(out, 'dalle_cuda.node'), { force: true });
  } catch {
    // nothing there
  }
  writeReport({ built: false, reason });
  process.exit(0);
}

function run(cmd, args) {
  return new Promise((resolve, reject) => {
    const p = spawn(cmd, args, { stdio: 'inherit' });
    p.on('error', reject);
    p.on('exit', (code) => (code === 0 ? resolve() : reject(new Error(`${cmd} exited with ${code}: ${args.join(' ')}`))));
  });
}

// Runs the jobs, at most `width` at a time.
async function pool(jobs, width) {
  let next = 0;
  const worker = async () => {
    while (next < jobs.length) await jobs[next++]();
  };
  await Promise.all(Array.from({ length: Math.min(width, jobs.length) }, worker));
}

async function main() {
  const mode = process.env.DALLE_CUDA;
  if (mode === '0') skip('DALLE_CUDA=0');
  const nvcc = findNvcc();
  if (!nvcc) {
    if (mode === '1') {
      console.error('dalle: DALLE_CUDA=1 but nvcc was not found (set CUDA_HOME or put nvcc on PATH)');
      process.exit(1);
    }
    skip('nvcc not found (set CUDA_HOME or put nvcc on PATH to build it; DALLE_CUDA=1 makes this an error)');
  }
  // The toolkit: next to nvcc, or (nvcc being a wrapper script, as /usr/local/bin/nvcc can be) the usual places.
  const homes = [path.resolve(path.dirname(nvcc), '..'), process.env.CUDA_HOME, process.env.CUDA_PATH, '/usr/local/cuda']
    .filter(Boolean);
  const libDirsOf = (home) => ['lib64', 'lib', 'targets/x86_64-linux/lib', 'targets/sbsa-linux/lib']
    .map((d) => path.join(home, d))
    .filter((d) => fs.existsSync(path.join(d, 'libcudart_static.a')));
  const cudaHome = homes.find((h) => libDirsOf(h).length > 0 && fs.existsSync(path.join(h, 'include', 'cuda_runtime_api.h')));
  const cudaInclude = cudaHome ? path.join(cudaHome, 'include') : '';
  const libDirs = cudaHome ? libDirsOf(cudaHome) : [];
  if (libDirs.length === 0) {
    const reason = `no CUDA toolkit with libcudart_static.a and headers in ${homes.join(', ')}`;
    if (mode === '1') {
      console.error(`dalle: ${reason}`);
      process.exit(1);
    }
    skip(reason);
  }
  const nodeInclude = path.resolve(arg('--node-include', process.env.npm_config_nodedir
    ? path.join(process.env.npm_config_nodedir, 'include', 'node')
    : path.join(path.dirname(process.execPath), '..', 'include', 'node')));
  const napiInclude = path.resolve(arg('--napi-include', require('node-addon-api').include_dir));
  const arches = (process.env.DALLE_CUDA_ARCH || '90').split(',').map((s) => s.trim()).filter(Boolean);
  if (arches.some((a) => !/^\d+a?$/.test(a))) {
    console.error(`dalle: DALLE_CUDA_ARCH must be compute capabilities like 90 or 80,90, got ${process.env.DALLE_CUDA_ARCH}`);
    process.exit(1);
  }
  const gencode = arches.flatMap((a) => ['-gencode', `arch=compute_${a},code=sm_${a}`]);
  const last = arches[arches.length - 1];
  gencode.push('-gencode', `arch=compute_${last},code=compute_${last}`);

  fs.mkdirSync(cacheDir, { recursive: true });
  const started = Date.now();
  const cxx = process.env.CXX || 'g++';
  const common = ['-std=c++17', '-O3', '-fPIC', '-DNAPI_VERSION=8', '-DNAPI_CPP_EXCEPTIONS', '-DNODE_ADDON_API_DISABLE_DEPRECATED'];
  const objs = [];
  const jobs = [];
  const reused = [];
  const headerText = HEADERS.map((h) => fs.readFileSync(path.join(here, h), 'utf8')).join('\0');
  const hostHeaderText = HOST_HEADERS.map((h) => fs.readFileSync(path.join(here, h), 'utf8')).join('\0');
  const nvccVersion = execFileSync(nvcc, ['--version']).toString();
  // Objects are cached by content (sources, headers, compiler, flags) outside build/, which `node-gyp rebuild` wipes:
  // rebuilding the main addon then relinks the CUDA addon in a second instead of recompiling the kernels.
  const cached = (f, compiler, args, headers = headerText) => {
    const hash = crypto.createHash('sha256')
      .update([fs.readFileSync(path.join(here, f), 'utf8'), headers, compiler, nvccVersion, ...args].join('\0'))
      .digest('hex').slice(0, 16);
    const o = path.join(cacheDir, `${path.basename(f).replace(/\.(cu|cc)$/, '')}-${hash}.o`);
    objs.push(o);
    jobs.push(async () => {
      if (await waitForOther(o)) {
        reused.push(f);
        return;
      }
      const lock = `${o}.lock`;
      fs.writeFileSync(lock, String(process.pid));
      try {
        const tmp = `${o}.tmp-${process.pid}`;
        await run(compiler, [...args, '-c', path.join(here, f), '-o', tmp]);
        fs.renameSync(tmp, o);
      } finally {
        fs.rmSync(lock, { force: true });
      }
    });
  };
  for (const f of NVCC_SOURCES) cached(f, nvcc, ['-std=c++17', '-O3', '-Xcompiler', '-fPIC', ...gencode]);
  for (const f of CXX_SOURCES) {
    cached(f, cxx, [...common, '-Wall', '-fexceptions', '-pthread', `-I${nodeInclude}`, `-I${napiInclude}`, `-I${cudaInclude}`,
      `-I${path.join(here, '..', 'collective')}`], headerText + '\0' + hostHeaderText);
  }
  const width = Math.max(1, Number(process.env.DALLE_CUDA_JOBS || 2));
  console.log(`dalle: building the CUDA addon with ${nvcc} for sm_${arches.join(', sm_')} (${width} jobs)`);
  await pool(jobs, width);
  fs.mkdirSync(out, { recursive: true });
  const target = path.join(out, 'dalle_cuda.node');
  const tmp = `${target}.tmp-${process.pid}`;
  await run(cxx, ['-shared', '-o', tmp, ...objs, ...libDirs.map((d) => `-L${d}`), '-lcudart_static', '-ldl', '-lrt',
    '-lpthread']);
  fs.renameSync(tmp, target);
  const seconds = Math.round((Date.now() - started) / 100) / 10;
  const version = nvccVersion.trim().split('\n').pop();
  writeReport({ built: true, reason: '', nvcc, nvccVersion: version, arch: arches, seconds, reusedObjects: reused });
  console.log(`dalle: CUDA addon built in ${seconds} s${reused.length ? ` (cached objects: ${reused.join(', ')})` : ''}: ${target}`);
}

main().catch((err) => {
  console.error(`dalle: building the CUDA addon failed: ${err.message}\n(DALLE_CUDA=0 npm run install skips the CUDA addon)`);
  process.exit(1);
});
