# The native addon: baseline C++17 sources in native/src and native/cpu (*.cc), plus per-ISA leaf kernels
# (native/cpu/*_avx2.cc, native/cpu/*_avx512.cc) compiled into their own static libraries with their own flags.
# ISA files hold leaf functions only (no std templates: a COMDAT compiled with -mavx512f could be picked by the linker
# for baseline callers); the baseline code checks the CPU at run time before calling them.
{
  "target_defaults": {
    "cflags_cc!": ["-fno-exceptions", "-fno-rtti", "-std=gnu++17", "-std=gnu++20"],
    "cflags_cc": ["-std=c++17", "-fexceptions", "-O3", "-fno-math-errno", "-Wall", "-Wno-unused-function", "-Wno-sign-compare"],
    "cflags!": ["-fno-exceptions"],
    "include_dirs": ["<!(node -p \"require('node-addon-api').include_dir\")", "native/src", "native/cpu"],
    "defines": ["NAPI_VERSION=8", "NAPI_CPP_EXCEPTIONS", "NODE_ADDON_API_DISABLE_DEPRECATED"],
    "xcode_settings": {"GCC_ENABLE_CPP_EXCEPTIONS": "YES", "CLANG_CXX_LIBRARY": "libc++", "MACOSX_DEPLOYMENT_TARGET": "11.0"}
  },
  "targets": [
    {
      "target_name": "dalle_native",
      "sources": ["<!@(node native/list-sources.js base)"],
      "libraries": ["-lpthread"],
      "conditions": [
        ["target_arch=='x64'", {
          "dependencies": ["dalle_avx2", "dalle_avx512"],
          "defines": ["DALLE_X86=1"]
        }]
      ]
    },
    {
      # The CUDA backend: a separate addon, build/Release/dalle_cuda.node, built by native/cuda/build.js when nvcc is
      # found (DALLE_CUDA=1 requires it, DALLE_CUDA=0 skips it); dalle_native never links it. See native/cuda/README.md.
      "target_name": "dalle_cuda",
      "type": "none",
      "actions": [{
        "action_name": "build_dalle_cuda",
        "inputs": ["<!@(node native/cuda/build.js --list-inputs)"],
        "outputs": ["<(PRODUCT_DIR)/dalle_cuda.json"],
        "action": ["node", "native/cuda/build.js", "--out", "<(PRODUCT_DIR)",
                   "--node-include", "<(node_root_dir)/include/node",
                   "--napi-include", "<!(node -p \"require('node-addon-api').include_dir\")"]
      }]
    },
    {
      # The Gloo collective backend (data-parallel CPU ranks): a separate addon, build/Release/dalle_collective.node,
      # built by native/collective/build.js when Gloo's headers and libgloo are found (DALLE_COLLECTIVE=1 requires
      # them, DALLE_COLLECTIVE=0 skips it); dalle_native never links it. See native/collective/README.md.
      "target_name": "dalle_collective",
      "type": "none",
      "actions": [{
        "action_name": "build_dalle_collective",
        "inputs": ["<!@(node native/collective/build.js --list-inputs)"],
        "outputs": ["<(PRODUCT_DIR)/dalle_collective.json"],
        "action": ["node", "native/collective/build.js", "--out", "<(PRODUCT_DIR)",
                   "--node-include", "<(node_root_dir)/include/node",
                   "--napi-include", "<!(node -p \"require('node-addon-api').include_dir\")"]
      }]
    }
  ],
  "conditions": [
    ["target_arch=='x64'", {
      "targets": [
        {
          "target_name": "dalle_avx2",
          "type": "static_library",
          "sources": ["<!@(node native/list-sources.js avx2)"],
          "cflags": ["-mavx2", "-mfma", "-mf16c"],
          "cflags_cc": ["-mavx2", "-mfma", "-mf16c"],
          "defines": ["DALLE_X86=1"]
        },
        {
          "target_name": "dalle_avx512",
          "type": "static_library",
          "sources": ["<!@(node native/list-sources.js avx512)"],
          "cflags": ["-mavx512f", "-mavx512bw", "-mavx512vl", "-mavx512dq", "-mavx512bf16", "-mfma", "-mf16c"],
          "cflags_cc": ["-mavx512f", "-mavx512bw", "-mavx512vl", "-mavx512dq", "-mavx512bf16", "-mfma", "-mf16c"],
          "defines": ["DALLE_X86=1"]
        }
      ]
    }]
  ]
}
