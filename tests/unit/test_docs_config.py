"""Every setting pal reads is documented, with its default."""

from pathlib import Path

import pytest

from pal.config import ENV_VARS

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("doc", ["README.md", "docs/configuration.md"])
def test_every_env_var_is_documented_with_its_default(doc):
    text = (ROOT / doc).read_text()
    rows = {
        line.split("|")[1].strip(): line.split("|")[2].strip()
        for line in text.splitlines()
        if line.startswith("| ") and line.count("|") >= 4
    }
    missing = sorted(set(ENV_VARS) - set(rows))
    assert not missing, f"{doc} does not document {missing}"
    wrong = {name: rows[name] for name, default in ENV_VARS.items() if rows[name] != default}
    assert not wrong, f"{doc} gives other defaults than pal.config.ENV_VARS: {wrong}"
