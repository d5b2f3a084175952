from pathlib import Path

from rlhfkit.docs import replace_block

README = Path(__file__).resolve().parent.parent / "README.md"


def test_readme_config_reference_is_current():
    text = README.read_text(encoding="utf-8")
    assert replace_block(text) == text, "run: python -m rlhfkit.docs --write README.md"
    assert "| `reward_model_train_steps` | `1000` |" in text
