"""tools/bench_common.py: the machine line every benchmark table starts with names the CPU and its matrix units."""

import os
from pathlib import Path

from tests.load_file import load_module

machine = load_module(Path(__file__).resolve().parents[2] / "tools" / "bench_common.py", "bench_common").machine

AMD = """processor\t: 0
vendor_id\t: AuthenticAMD
cpu family\t: 26
model\t\t: 2
model name\t: AMD EPYC
flags\t\t: fpu sse2 avx2 avx512f avx512_bf16 avx512_vnni
"""
INTEL = """processor\t: 0
cpu family\t: 6
model\t\t: 143
model name\t: Intel(R) Xeon(R) Platinum 8481C CPU @ 2.70GHz
flags\t\t: fpu avx2 avx512f avx512_bf16 amx_bf16 amx_tile
"""


def test_machine_names_the_cpu_and_whether_it_has_amx():
    cores = f"{len(os.sched_getaffinity(0))} of {os.cpu_count()} cores"
    assert machine(AMD) == f"AMD EPYC (family 26, model 2), {os.uname().machine}, AVX-512, AVX-512 BF16, no AMX, {cores}"
    intel = machine(INTEL)
    assert intel.startswith("Intel(R) Xeon(R) Platinum 8481C CPU @ 2.70GHz (family 6, model 143)")
    assert "AVX-512 BF16, AMX," in intel and "no AMX" not in intel
    assert "no AVX-512, no AMX" in machine("model name\t: Old CPU\nflags\t\t: sse2 avx2\n")
