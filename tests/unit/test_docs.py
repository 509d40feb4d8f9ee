"""The keyword table in docs/ is generated from the parsers' registries: it must not drift."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_keyword_table_is_current():
    r = subprocess.run([sys.executable, str(ROOT / "docs" / "gen_keywords.py"), "--check"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr


def test_keyword_table_lists_both_languages():
    text = (ROOT / "docs" / "keywords.md").read_text()
    for word in ("virtual_router_id", "track_script", "balance", "default-server"):
        assert word in text
