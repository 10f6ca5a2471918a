"""Ship the top-level `device_profiles/` folder inside the wheel as `toolkit.device_profiles`.

Everything else is declared in pyproject.toml. The mapping lives here because
pyproject's `packages.find` cannot add a package from outside `toolkit/`, and an
explicit package list would silently drop every new subpackage.
"""

from setuptools import find_namespace_packages, setup

setup(
    packages=[*find_namespace_packages(include=["toolkit", "toolkit.*"], exclude=["*.__pycache__"]),
              "toolkit.device_profiles", "toolkit.device_profiles.cloud"],
    package_dir={"toolkit.device_profiles": "device_profiles"},
)
