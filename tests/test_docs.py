from pathlib import Path

from rlhfkit.docs import replace_block

REFERENCE = Path(__file__).resolve().parent.parent / "docs" / "config-reference.md"


def test_config_reference_is_current():
    text = REFERENCE.read_text(encoding="utf-8")
    assert replace_block(text) == text, (
        "run: python -m rlhfkit.docs --write docs/config-reference.md"
    )
    assert "| `reward_model_train_steps` | `1000` |" in text
