"""This machine's arithmetic peak, measured: the FLOP/s its cores reach on independent fused multiply-adds.

    python benchmarks/peak.py            # the float32 peak, and the bfloat16 one on AVX512-BF16 and AMX CPUs
    from peak import peaks; peaks()      # {"float32": 2.1e11, "bfloat16": None, "amx": None, "matmul": 1.8e11, ...}

A peak computed from a data sheet needs the clock the cores really run at, which a virtual machine does not say
(/proc/cpuinfo gives the nominal one; turbo runs above it). So the peak is measured: a small C loop of 12
independent FMA chains per core (AVX2 ``vfmadd``, AVX-512 ``vfmadd`` on 512-bit registers where the CPU has it,
and ``vdpbf16ps`` on AVX512-BF16), compiled with the machine's gcc and run on every core at once through ctypes
(which releases the GIL). One FMA is 2 FLOP per lane; one ``vdpbf16ps`` is 2 multiply-adds per float32 lane, 4 FLOP.
On CPUs with AMX (Sapphire Rapids and later), where oneDNN runs bfloat16 convolutions on the tile unit, the bfloat16
peak is the AMX one: ``tdpbf16ps`` on four independent 16 x 16 accumulators, 16 x 16 x 32 multiply-adds each.
For scale it also times a large float32 matrix product through NumPy's BLAS. Without gcc, the peak falls back to
cores x FLOP/cycle x the nominal clock, and says so.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import subprocess
import tempfile
import threading
import time
from pathlib import Path

SOURCE = r"""
#include <immintrin.h>
#define CHAINS(T, SET, OP) T a0=SET(1.f),a1=SET(1.1f),a2=SET(1.2f),a3=SET(1.3f),a4=SET(1.4f),a5=SET(1.5f), \
    a6=SET(1.6f),a7=SET(1.7f),a8=SET(1.8f),a9=SET(1.9f),a10=SET(2.f),a11=SET(2.1f);
__attribute__((target("avx2,fma"))) float fma256(long n) {
    CHAINS(__m256, _mm256_set1_ps, 0)
    __m256 b = _mm256_set1_ps(0.999999f), c = _mm256_set1_ps(1e-7f);
    for (long i = 0; i < n; i++) {
        a0=_mm256_fmadd_ps(a0,b,c); a1=_mm256_fmadd_ps(a1,b,c); a2=_mm256_fmadd_ps(a2,b,c);
        a3=_mm256_fmadd_ps(a3,b,c); a4=_mm256_fmadd_ps(a4,b,c); a5=_mm256_fmadd_ps(a5,b,c);
        a6=_mm256_fmadd_ps(a6,b,c); a7=_mm256_fmadd_ps(a7,b,c); a8=_mm256_fmadd_ps(a8,b,c);
        a9=_mm256_fmadd_ps(a9,b,c); a10=_mm256_fmadd_ps(a10,b,c); a11=_mm256_fmadd_ps(a11,b,c);
    }
    __m256 s = _mm256_add_ps(_mm256_add_ps(_mm256_add_ps(a0,a1),_mm256_add_ps(a2,a3)),
               _mm256_add_ps(_mm256_add_ps(_mm256_add_ps(a4,a5),_mm256_add_ps(a6,a7)),
               _mm256_add_ps(_mm256_add_ps(a8,a9),_mm256_add_ps(a10,a11))));
    float out[8]; _mm256_storeu_ps(out, s); return out[0];
}
__attribute__((target("avx512f"))) float fma512(long n) {
    CHAINS(__m512, _mm512_set1_ps, 0)
    __m512 b = _mm512_set1_ps(0.999999f), c = _mm512_set1_ps(1e-7f);
    for (long i = 0; i < n; i++) {
        a0=_mm512_fmadd_ps(a0,b,c); a1=_mm512_fmadd_ps(a1,b,c); a2=_mm512_fmadd_ps(a2,b,c);
        a3=_mm512_fmadd_ps(a3,b,c); a4=_mm512_fmadd_ps(a4,b,c); a5=_mm512_fmadd_ps(a5,b,c);
        a6=_mm512_fmadd_ps(a6,b,c); a7=_mm512_fmadd_ps(a7,b,c); a8=_mm512_fmadd_ps(a8,b,c);
        a9=_mm512_fmadd_ps(a9,b,c); a10=_mm512_fmadd_ps(a10,b,c); a11=_mm512_fmadd_ps(a11,b,c);
    }
    return _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(_mm512_add_ps(a0,a1),_mm512_add_ps(a2,a3)),
        _mm512_add_ps(_mm512_add_ps(_mm512_add_ps(a4,a5),_mm512_add_ps(a6,a7)),
        _mm512_add_ps(_mm512_add_ps(a8,a9),_mm512_add_ps(a10,a11)))));
}
__attribute__((target("avx512f,avx512bf16"))) float dpbf16(long n) {
    CHAINS(__m512, _mm512_set1_ps, 0)
    __m512bh b = _mm512_cvtne2ps_pbh(_mm512_set1_ps(0.5f), _mm512_set1_ps(0.25f));
    for (long i = 0; i < n; i++) {
        a0=_mm512_dpbf16_ps(a0,b,b); a1=_mm512_dpbf16_ps(a1,b,b); a2=_mm512_dpbf16_ps(a2,b,b);
        a3=_mm512_dpbf16_ps(a3,b,b); a4=_mm512_dpbf16_ps(a4,b,b); a5=_mm512_dpbf16_ps(a5,b,b);
        a6=_mm512_dpbf16_ps(a6,b,b); a7=_mm512_dpbf16_ps(a7,b,b); a8=_mm512_dpbf16_ps(a8,b,b);
        a9=_mm512_dpbf16_ps(a9,b,b); a10=_mm512_dpbf16_ps(a10,b,b); a11=_mm512_dpbf16_ps(a11,b,b);
    }
    return _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(_mm512_add_ps(a0,a1),_mm512_add_ps(a2,a3)),
        _mm512_add_ps(_mm512_add_ps(_mm512_add_ps(a4,a5),_mm512_add_ps(a6,a7)),
        _mm512_add_ps(_mm512_add_ps(a8,a9),_mm512_add_ps(a10,a11)))));
}

#include <stdint.h>
#include <unistd.h>
#include <sys/syscall.h>
struct tilecfg { uint8_t palette, start; uint8_t pad[14]; uint16_t colsb[16]; uint8_t rows[16]; };
/* Linux hands out AMX's tile state only on request (ARCH_REQ_XCOMP_PERM for XTILEDATA): 0 when granted. */
int amx_allow(void) { return (int)syscall(SYS_arch_prctl, 0x1023, 18); }
__attribute__((target("amx-tile,amx-bf16"))) float amx_bf16(long n) {
    static __thread uint16_t a[16 * 32], b[16 * 32];
    float c[16 * 16];
    struct tilecfg cfg = {0};
    cfg.palette = 1;
    for (int t = 0; t < 8; t++) { cfg.colsb[t] = 64; cfg.rows[t] = 16; }
    for (int i = 0; i < 16 * 32; i++) { a[i] = 0x3f00; b[i] = 0x3e80; }  /* 0.5 and 0.25 in bfloat16 */
    _tile_loadconfig(&cfg);
    _tile_zero(0); _tile_zero(1); _tile_zero(2); _tile_zero(3);
    _tile_loadd(4, a, 64); _tile_loadd(5, a, 64); _tile_loadd(6, b, 64); _tile_loadd(7, b, 64);
    for (long i = 0; i < n; i++) {  /* four independent 16x16 accumulators, each 16x16x32 multiply-adds */
        _tile_dpbf16ps(0, 4, 6); _tile_dpbf16ps(1, 4, 7); _tile_dpbf16ps(2, 5, 6); _tile_dpbf16ps(3, 5, 7);
    }
    _tile_stored(0, c, 64);
    _tile_release();
    return c[0];
}
"""
# FLOP per loop iteration: 12 instructions x lanes x (2 per FMA, 4 per bf16 dot product of pairs)
KERNELS = {
    "fma256": ("avx2", 12 * 8 * 2),
    "fma512": ("avx512f", 12 * 16 * 2),
    "dpbf16": ("avx512_bf16", 12 * 16 * 4),
    "amx_bf16": ("amx_bf16", 4 * 16 * 16 * 32 * 2),
}  # AMX: 4 tile products of 16x16x32 multiply-adds


def _flags() -> set[str]:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def _library(folder: Path):
    gcc = shutil.which("gcc") or shutil.which("cc")
    if not gcc:
        return None
    src, lib = folder / "peak.c", folder / "peak.so"
    src.write_text(SOURCE)
    done = subprocess.run([gcc, "-O2", "-shared", "-fPIC", "-o", str(lib), str(src)], capture_output=True, check=False)
    return ctypes.CDLL(str(lib)) if done.returncode == 0 else None


def _run(fn, flop_per_iter: int, seconds: float = 0.5) -> float:
    """FLOP/s of ``fn`` on every core at once, best of three rounds."""
    fn.argtypes, fn.restype = [ctypes.c_long], ctypes.c_float
    cores = os.cpu_count() or 1
    n = 1_000_000
    while True:  # iterations for ~``seconds`` on one core
        t = time.perf_counter()
        fn(n)
        if time.perf_counter() - t > seconds / 4:
            break
        n *= 4
    n = int(n * seconds / max(time.perf_counter() - t, 1e-6))
    best = 0.0
    for _ in range(3):
        threads = [threading.Thread(target=fn, args=(n,)) for _ in range(cores)]
        t = time.perf_counter()
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        best = max(best, cores * n * flop_per_iter / (time.perf_counter() - t))
    return best


def matmul_flops(n: int = 2048) -> float:
    import numpy as np

    a = np.random.default_rng(0).random((n, n), dtype=np.float32)
    a @ a
    times = []
    for _ in range(5):
        t = time.perf_counter()
        a @ a
        times.append(time.perf_counter() - t)
    return 2 * n**3 / min(times)


def _nominal(per_cycle: int) -> float:
    try:
        mhz = next(float(line.split(":")[1]) for line in Path("/proc/cpuinfo").read_text().splitlines()
                   if line.startswith("cpu MHz"))  # fmt: skip
    except (OSError, StopIteration, ValueError):
        return float("nan")
    return (os.cpu_count() or 1) * per_cycle * mhz * 1e6


def peaks() -> dict:
    """{"float32", "bfloat16" (None without AVX512-BF16), "matmul", "how"}: FLOP/s of this machine."""
    flags, amx = _flags(), None
    with tempfile.TemporaryDirectory(prefix="peak-") as tmp:
        lib = _library(Path(tmp))
        if lib is None:
            f32 = _nominal(64 if "avx512f" in flags else 32 if "fma" in flags else 16)
            bf16 = _nominal(128) if "avx512_bf16" in flags else None
            how = "cores x FLOP/cycle x nominal clock (no C compiler to measure it)"
        else:
            f32 = _run(lib.fma256, KERNELS["fma256"][1])
            if "avx512f" in flags:
                f32 = max(f32, _run(lib.fma512, KERNELS["fma512"][1]))
            bf16 = _run(lib.dpbf16, KERNELS["dpbf16"][1]) if "avx512_bf16" in flags else None
            how = "measured: 12 independent FMA chains per core, every core"
            if "amx_bf16" in flags and lib.amx_allow() == 0:
                amx = _run(lib.amx_bf16, KERNELS["amx_bf16"][1])
                how += "; AMX: 4 independent tile products per core, every core"
    return {
        "float32": f32,
        "bfloat16": max(bf16 or 0, amx or 0) or None,
        "bfloat16_vector": bf16,
        "amx": amx,
        "matmul": matmul_flops(),
        "how": how,
    }


if __name__ == "__main__":
    p = peaks()
    print(f"float32 peak: {p['float32'] / 1e9:,.0f} GFLOP/s ({p['how']})")
    if p["bfloat16"]:
        print(
            f"bfloat16 peak: {p['bfloat16'] / 1e9:,.0f} GFLOP/s"
            + (f" (AMX tiles; vector vdpbf16ps {p['bfloat16_vector'] / 1e9:,.0f})" if p["amx"] else "")
        )
    print(f"float32 matrix product (NumPy, 2048x2048): {p['matmul'] / 1e9:,.0f} GFLOP/s")
