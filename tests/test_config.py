from dataclasses import dataclass

import pytest

from rlhfkit.config import build_config, check, field_help, load_config, param, parse_overrides
from rlhfkit.data.config import DataConfig
from rlhfkit.errors import ConfigError


@dataclass
class Example:
    steps: int = param(10, "number of steps")
    rate: float = param(1e-4, "learning rate")
    name: str | None = param(None, "optional name")
    flag: bool = param(False, "a switch")
    mode: str = param("a", "a choice", choices=("a", "b"))
    targets: list[str] = param(["q_proj", "v_proj"], "modules")

    def validate(self):
        check(self.steps > 0, "steps", self.steps, "must be positive")


def test_defaults_then_yaml_then_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("steps: 5\nrate: 0.5\nname: first\n")
    config = load_config(Example, path, ["rate=2e-3", "flag=true", "targets=a,b"])
    assert config == Example(steps=5, rate=2e-3, name="first", flag=True, targets=["a", "b"])
    assert load_config(Example, None, {"name": "none"}).name is None


def test_every_problem_is_listed_with_field_and_value():
    with pytest.raises(ConfigError) as info:
        build_config(Example, {"steps": "ten", "mode": "c", "stepz": 3, "flag": "maybe"})
    message = str(info.value)
    assert "steps='ten': expected an integer" in message
    assert "mode='c' is not allowed; choose one of: a, b" in message
    assert "unknown parameter 'stepz' (did you mean steps?)" in message
    assert "flag='maybe': expected true or false" in message


def test_validate_names_the_field():
    with pytest.raises(ConfigError, match="steps=0 is invalid: must be positive"):
        build_config(Example, {"steps": 0})


def test_override_syntax_and_yaml_errors(tmp_path):
    with pytest.raises(ConfigError, match="write overrides as key=value"):
        parse_overrides(["steps"])
    bad = tmp_path / "bad.yaml"
    bad.write_text("steps: 1\n  rate: [\n")
    with pytest.raises(ConfigError, match=r"bad.yaml:\d+: invalid YAML"):
        load_config(Example, bad)
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(Example, tmp_path / "missing.yaml")
    listing = tmp_path / "list.yaml"
    listing.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="must be a mapping"):
        load_config(Example, listing)


def test_field_help_documents_every_field_once():
    rows = field_help(DataConfig)
    names = [row[0] for row in rows]
    assert names[:2] == ["large_model_reference", "instruction"]
    assert all(row[3] for row in rows)
    assert dict((r[0], r[2]) for r in rows)["prompt_sequence_length"] == 512


def test_data_config_validation():
    with pytest.raises(ConfigError, match="target_sequence_length=0 is invalid"):
        load_config(DataConfig, None, ["target_sequence_length=0"])


@dataclass
class Divides:
    batch: int = param(8, "batch")
    mini: int = param(4, "mini-batch")
    rate: float = param(1.0, "rate")

    def validate(self):
        check(self.mini >= 1, "mini", self.mini, "must be at least 1")
        check(self.rate > 0, "rate", self.rate, "must be positive")
        check(self.batch % self.mini == 0, "mini", self.mini, "must divide batch")


def test_validation_problems_are_listed_with_the_refused_values_all_at_once():
    with pytest.raises(ConfigError) as info:
        build_config(Divides, {"mini": 0, "rate": -1, "bacth": 3, "batch": "many"})
    message = str(info.value)
    assert "batch='many': expected an integer" in message
    assert "unknown parameter 'bacth' (did you mean batch?)" in message  # letters swapped
    assert "mini=0 is invalid: must be at least 1" in message
    assert "rate=-1.0 is invalid: must be positive" in message
    # the division by the refused 0 that followed does not hide them
    assert "ZeroDivisionError" not in message
