"""Recipes: YAML with a base file, key=value overrides, typed values, errors that name the line."""

from dataclasses import dataclass, field

import pytest

from mathrl.config import config_dict, load_config
from mathrl.errors import UserError
from mathrl.train.policy import LoraSettings
from mathrl.train.schedule import lr_multiplier


@dataclass(frozen=True)
class Recipe:
    model: str
    lr: float = 1e-3
    epochs: int = 1
    benchmarks: tuple[str, ...] = ()
    adapter: str | None = None
    lora: LoraSettings = field(default_factory=LoraSettings)


def test_base_file_overrides_and_type_conversion(tmp_path):
    (tmp_path / "base.yaml").write_text("model: tiny\nlr: 2e-4\nlora:\n  rank: 64\n  alpha: 128\n")
    (tmp_path / "child.yaml").write_text("base: base.yaml\nepochs: 2\nlora:\n  rank: 16\n")
    cfg = load_config(Recipe, tmp_path / "child.yaml", ["benchmarks=math500,aime2024", "adapter=runs/a/final",
                                                        "lora.dropout=0.05"])
    # YAML 1.1 reads 2e-4 as a string; the field's type makes it a float.
    assert cfg.lr == 2e-4 and isinstance(cfg.lr, float)
    assert cfg.epochs == 2 and cfg.model == "tiny"
    assert cfg.lora == LoraSettings(rank=16, alpha=128, dropout=0.05)  # nested sections merge
    assert cfg.benchmarks == ("math500", "aime2024") and cfg.adapter == "runs/a/final"
    assert config_dict(cfg)["benchmarks"] == ["math500", "aime2024"]
    assert load_config(Recipe, None, ["model=x", "adapter=null"]).adapter is None


def test_errors_name_the_file_line_and_field(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text("model: tiny\nlr: 1e-3\nepoch: 3\n")
    with pytest.raises(UserError, match=r"r\.yaml:3: unknown setting 'epoch'"):
        load_config(Recipe, path)
    path.write_text("model: tiny\nlora:\n  rank: lots\n")
    with pytest.raises(UserError, match=r"r\.yaml:3: lora\.rank must be an integer, got 'lots'"):
        load_config(Recipe, path)
    with pytest.raises(UserError, match=r"command line: epochs=two: epochs must be an integer"):
        load_config(Recipe, None, ["model=tiny", "epochs=two"])
    with pytest.raises(UserError, match="missing required setting"):
        load_config(Recipe, None, [])
    with pytest.raises(UserError, match="lora.rank must be >= 1"):
        load_config(Recipe, None, ["model=tiny", "lora.rank=0"])
    with pytest.raises(UserError, match="expected key=value"):
        load_config(Recipe, None, ["model"])


def test_lr_schedules():
    assert [lr_multiplier(s, 4) for s in range(4)] == [1.0, 0.75, 0.5, 0.25]  # linear decay to 0
    assert [lr_multiplier(s, 6, warmup_steps=2) for s in range(6)] == [0.5, 1.0, 1.0, 0.75, 0.5, 0.25]
    assert lr_multiplier(0, 5, "cosine") == 1.0 and lr_multiplier(2, 4, "cosine") == pytest.approx(0.5)
    assert lr_multiplier(3, 4, "constant") == 1.0
    assert lr_multiplier(2, 4, "linear", min_ratio=0.1) == pytest.approx(0.55)
