"""The compiled parts of the memory index: the Hamming shortlist kernel (vector/codes.py) and
the HNSW search over the faiss graph's arrays (vector/ann.py).

Everything else about the package is in pyproject.toml; pip builds this with the machine's C
compiler and Python headers.
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            f"autoforge_data.vector.{name}",
            sources=[f"src/autoforge_data/vector/{name}.c"],
            depends=["src/autoforge_data/vector/_simd.h", "src/autoforge_data/vector/_pybuf.h"],
            extra_compile_args=["-O2", "-Wall", "-Wextra", "-Werror"],
        )
        for name in ("_bits", "_hnsw")
    ]
)
