"""Build skewd's C core: every src/skewd/*.pyx is one extension, and names
the csrc/ files it links in its own `# distutils: sources` header."""
import glob

from Cython.Build import cythonize
from setuptools import Extension, setup

extensions = [
    Extension(
        "skewd." + path.rsplit("/", 1)[1][:-4],
        [path],
        include_dirs=["csrc"],
        extra_compile_args=["-O2", "-Wall", "-Wno-unused-function", "-std=gnu11"],
    )
    for path in sorted(glob.glob("src/skewd/*.pyx"))
]

setup(
    ext_modules=cythonize(
        extensions,
        language_level=3,
        compiler_directives={"binding": False, "embedsignature": True},
    ),
)
