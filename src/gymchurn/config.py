"""Project paths and Hydra config composition shared by every entrypoint."""

from __future__ import annotations

from pathlib import Path

from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, OmegaConf


def _find_project_root() -> Path:
    # An editable install keeps the package in <root>/src/gymchurn; otherwise use the CWD.
    candidate = Path(__file__).resolve().parents[2]
    return candidate if (candidate / "pyproject.toml").exists() else Path.cwd()


PROJECT_ROOT = _find_project_root()
CONFIG_DIR = PROJECT_ROOT / "conf"


def register_resolvers() -> None:
    """`${root:}` in a config is the project root, so paths do not depend on the CWD."""
    if not OmegaConf.has_resolver("root"):
        OmegaConf.register_new_resolver("root", lambda: PROJECT_ROOT.as_posix())


def resolve_path(path: str | Path) -> Path:
    """A config path: absolute as given, relative ones against the project root."""
    path = Path(path).expanduser()
    return path if path.is_absolute() else PROJECT_ROOT / path


def compose_config(config_name: str = "config", overrides: list[str] | None = None) -> DictConfig:
    """Compose a config the way the entrypoints do, without running a Hydra job (tests, compare)."""
    register_resolvers()
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        return compose(config_name=config_name, overrides=overrides or [])
