"""Repository rules that wrap Debian's system libraries (offline build)."""

# Labels that upstream Abseil exposes and that kvfold uses; all alias one library.
_ABSL_LABELS = {
    "absl/base": ["core_headers", "base"],
    "absl/container": ["flat_hash_map", "flat_hash_set", "inlined_vector", "btree"],
    "absl/flags": ["flag", "parse", "usage"],
    "absl/functional": ["function_ref"],
    "absl/hash": ["hash"],
    "absl/random": ["random", "distributions"],
    "absl/status": ["status", "statusor"],
    "absl/strings": ["strings", "str_format", "cord"],
    "absl/synchronization": ["synchronization"],
    "absl/time": ["time"],
    "absl/types": ["span", "optional", "variant"],
}

def _absl_impl(ctx):
    libdir = ctx.path("/usr/lib/x86_64-linux-gnu")
    libs = []
    for f in libdir.readdir():
        name = f.basename
        if name.startswith("libabsl_") and name.endswith(".so"):
            libs.append("-l" + name[len("lib"):-len(".so")])
    if not libs:
        fail("Abseil not found: apt-get install libabsl-dev")
    libs = sorted(libs)
    # Not --as-needed: test binaries link our libraries as shared objects, and
    # a symbol only a .so uses would otherwise lose its absl library.
    linkopts = libs + ["-pthread"]
    ctx.file("BUILD", "\n".join([
        'package(default_visibility = ["//visibility:public"])',
        "cc_library(name = \"absl\", linkopts = %s)" % repr(linkopts),
        "",
    ]))
    for pkg, names in _ABSL_LABELS.items():
        ctx.file(pkg + "/BUILD", "\n".join(
            ['package(default_visibility = ["//visibility:public"])'] +
            ['alias(name = "%s", actual = "//:absl")' % n for n in names],
        ) + "\n")

absl_repository = repository_rule(implementation = _absl_impl, local = True)

def _cuda_impl(ctx):
    root = ctx.os.environ.get("CUDA_PATH", "/usr/local/cuda")
    if ctx.path(root + "/bin/nvcc").exists:
        for entry in ctx.path(root).readdir():
            ctx.symlink(entry, entry.basename)
        # nvcc finds cicc, ptxas and its headers relative to its real path,
        # which the action sandbox only shows when called by absolute path.
        ctx.file("defs.bzl", 'NVCC = "%s/bin/nvcc"\n' % root)
        ctx.file("BUILD", """
package(default_visibility = ["//visibility:public"])
filegroup(name = "nvcc", srcs = ["bin/nvcc"])
filegroup(name = "headers_files", srcs = glob(["include/**"]))
cc_library(
    name = "cuda_headers",
    hdrs = glob(["include/**"]),
    includes = ["include"],
)
cc_library(
    name = "cudart",
    srcs = ["lib64/libcudart_static.a"],
    linkopts = ["-ldl", "-lrt", "-pthread"],
    deps = [":cuda_headers"],
)
cc_library(
    name = "cublas",
    linkopts = ["-L%s/lib64", "-Wl,-rpath,%s/lib64", "-lcublasLt", "-lcublas"],
    deps = [":cuda_headers"],
)
cc_library(
    name = "nccl",
    linkopts = ["-L%s/lib64", "-Wl,-rpath,%s/lib64", "-lnccl"],
    deps = [":cuda_headers"],
)
config_setting(name = "have_nvcc", values = {"define": "cuda=true"})
""" % (root, root, root, root))
    else:
        # No toolkit: empty targets so the tree still analyses; CUDA targets are
        # incompatible without --config=cuda anyway.
        ctx.file("defs.bzl", 'NVCC = "nvcc-not-found"\n')
        ctx.file("BUILD", """
package(default_visibility = ["//visibility:public"])
filegroup(name = "nvcc", srcs = [])
filegroup(name = "headers_files", srcs = [])
cc_library(name = "cuda_headers")
cc_library(name = "cudart")
cc_library(name = "cublas")
cc_library(name = "nccl")
""")

cuda_repository = repository_rule(
    implementation = _cuda_impl,
    environ = ["CUDA_PATH"],
    local = True,
)
