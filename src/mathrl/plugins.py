"""Plugins: modules that register losses, rewards, rollout-engine kinds or datasets before a
command runs (``docs/extending.md``). A training recipe names them (``plugins: [my_pkg.losses,
./my_reward.py]``); any command loads those in ``$MATHRL_PLUGINS`` (comma-separated) first."""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import os
import sys
from pathlib import Path

PLUGINS_ENV = "MATHRL_PLUGINS"


def load_plugin(spec: str) -> None:
    """Import a plugin once: a module name (``my_pkg.losses``) or a Python file."""
    if spec.endswith(".py"):
        path = Path(spec).resolve()
        name = "mathrl_plugin_" + hashlib.sha1(str(path).encode()).hexdigest()[:12]
        if name in sys.modules:
            return
        if not path.is_file():
            raise ValueError(f"plugins: no file {spec}")
        module_spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(module_spec)
        sys.modules[name] = module
        module_spec.loader.exec_module(module)
        return
    try:
        importlib.import_module(spec)
    except ImportError as err:
        raise ValueError(f"plugins: cannot import {spec}: {err}") from None


def load_env_plugins(env=os.environ) -> None:
    for spec in filter(None, (s.strip() for s in env.get(PLUGINS_ENV, "").split(","))):
        load_plugin(spec)
