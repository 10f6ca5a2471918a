"""The builtin device profiles (*.yaml) and, in cloud/, the cloud price catalogue.

Kept at the repository's top level and shipped inside the wheel as the package
`toolkit.device_profiles` (see setup.py); found with `toolkit.paths.builtin_profiles_dir()`.
"""
