"""cuda_library: .cu files compiled by nvcc into a static cc_library.

Only built with --config=cuda (else the targets are incompatible and skipped).
"""

load("@local_cuda//:defs.bzl", "NVCC")

_GENCODE = [
    "-gencode=arch=compute_80,code=sm_80",    # A100
    "-gencode=arch=compute_90a,code=sm_90a",  # H100 / H200
    "-gencode=arch=compute_90a,code=compute_90a",  # PTX for newer GPUs
]

CUDA_ONLY = select({
    "//:cuda_enabled": [],
    "//conditions:default": ["@platforms//:incompatible"],
})

# What a library that dispatches to CUDA adds: KVFOLD_WITH_CUDA and the ops,
# only with --config=cuda.
CUDA_DEFINES = select({
    "//:cuda_enabled": ["KVFOLD_WITH_CUDA"],
    "//conditions:default": [],
})

CUDA_OPS_DEP = select({
    "//:cuda_enabled": ["//kernels/cuda:cuda_ops"],
    "//conditions:default": [],
})

def cuda_library(name, srcs, hdrs = [], deps = [], nvcc_hdrs = [], **kwargs):
    """nvcc_hdrs: project headers the .cu files include from other packages."""
    objs = []
    for src in srcs:
        obj = name + "_" + src.replace("/", "_").replace(".cu", ".o")
        native.genrule(
            name = obj + "_nvcc",
            srcs = [src] + hdrs + nvcc_hdrs +
                   ["@local_cuda//:headers_files"],
            outs = [obj],
            cmd = " ".join([
                NVCC,
                "-c -std=c++20 -O3 -Xcompiler -fPIC -ccbin /usr/bin/gcc",
                "--expt-relaxed-constexpr",
                " ".join(_GENCODE),
                "-I. -I$(GENDIR)",
                "-o $@ $(location %s)" % src,
            ]),
            target_compatible_with = CUDA_ONLY,
        )
        objs.append(obj)
    native.cc_library(
        name = name,
        srcs = objs,
        hdrs = hdrs,
        linkstatic = True,
        deps = deps + ["@local_cuda//:cudart"],
        target_compatible_with = CUDA_ONLY,
        **kwargs
    )
