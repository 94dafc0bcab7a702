"""What a CUDA run needs of the machine, checked at start by the libraries' own rules, not at the first training step
hours later (issue 26). Distillation runs TRL's Triton kernels, which Triton compiles with a C compiler against
Python's headers (finding 10; Triton's rule: $CC, else gcc, else clang; <include>/Python.h); QLoRA and NF4 generation
need bitsandbytes' CUDA library, whose load error bitsandbytes keeps until the first 4-bit call. Through seams."""

from __future__ import annotations

import torch

from thinkswitch.engines.devices import bnb_cuda_error, triton_build_error

CUDA = torch.device("cuda")


def no_compiler(name):
    return None


def test_cuda_without_a_c_compiler_is_refused_with_what_to_install(tmp_path):
    (tmp_path / "Python.h").write_text("")
    error = triton_build_error(CUDA, use_triton=True, environ={}, which=no_compiler, python_include=tmp_path)
    assert error.startswith("distillation on CUDA runs TRL's Triton kernels") and "apt-get install gcc" in error
    assert triton_build_error(CUDA, use_triton=True, environ={"CC": "cc"}, which=no_compiler,
                              python_include=tmp_path) is None  # $CC, as Triton reads it
    assert triton_build_error(CUDA, use_triton=True, environ={}, which=lambda n: f"/usr/bin/{n}" if n == "clang"
                              else None, python_include=tmp_path) is None  # clang when there is no gcc


def test_cuda_without_pythons_headers_is_refused_naming_the_missing_file(tmp_path):
    error = triton_build_error(CUDA, use_triton=True, environ={"CC": "gcc"}, python_include=tmp_path)
    assert f"{tmp_path / 'Python.h'} is missing" in error and "python3-dev" in error


def test_nothing_to_build_off_cuda_or_where_trl_takes_no_triton_path(tmp_path):
    assert triton_build_error(torch.device("cpu"), use_triton=True, environ={}, which=no_compiler,
                              python_include=tmp_path) is None
    assert triton_build_error(CUDA, use_triton=False, environ={}, which=no_compiler, python_include=tmp_path) is None
    assert triton_build_error(torch.device("cpu")) is None  # TRL's own switch, on this machine's CPU


def test_bitsandbytes_without_its_cuda_library_is_refused_with_the_error_it_kept():
    from bitsandbytes.cextension import CudaBNBNativeLibrary, ErrorHandlerMockBNBNativeLibrary

    kept = ErrorHandlerMockBNBNativeLibrary("No compatible CUDA binary found at /x/libbitsandbytes_cuda131.so")
    assert bnb_cuda_error(CUDA, lib=kept) == (
        "bitsandbytes cannot run 4-bit layers on CUDA here (No compatible CUDA binary found at "
        "/x/libbitsandbytes_cuda131.so): QLoRA and NF4 generation need it; install the CUDA build (make install-cuda, "
        "in the README)")
    assert bnb_cuda_error(CUDA, lib=object.__new__(CudaBNBNativeLibrary)) is None
    assert "BNBNativeLibrary, a library without CUDA kernels" in bnb_cuda_error(CUDA)  # this machine's: CPU only
    assert bnb_cuda_error(torch.device("cpu")) is None
