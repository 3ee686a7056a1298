"""Builds the ``bastion_fastcheck`` extension (``make fastcheck``; see ``fastcheck.cpp``).

Needs g++ and Debian's ``libsimdjson-dev`` and ``libre2-dev`` (``.ci/run`` installs them).
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "bastion_fastcheck",
            sources=["fastcheck.cpp"],
            libraries=["simdjson", "re2"],
            language="c++",
            extra_compile_args=["-std=c++17", "-O3", "-fvisibility=hidden", "-Wall", "-Wextra"],
        )
    ],
)
