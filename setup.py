"""The one compiled part: the Hamming shortlist kernel of the memory index (vector/codes.py).

Everything else about the package is in pyproject.toml; pip builds this with the machine's C
compiler and Python headers.
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "autoforge_data.vector._bits",
            sources=["src/autoforge_data/vector/_bits.c"],
            extra_compile_args=["-O2", "-Wall", "-Wextra", "-Werror"],
        )
    ]
)
